"""Finished deliveries whose text is still kept: the rows retention blanks next.

Revision ID: nt_0002
Revises: nt_0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "nt_0002"
down_revision = "nt_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_unpruned",
        "deliveries",
        ["update_time"],
        postgresql_where=sa.text("status IN ('SENT', 'FAILED') AND subject <> ''"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_unpruned", "deliveries")
