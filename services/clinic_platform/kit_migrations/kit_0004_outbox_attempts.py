"""Outbox rows the broker refuses: attempts, the last refusal, and parking.

Revision ID: kit_0004
Revises: kit_0003
Create Date: 2026-12-02

The relay counts the deliveries of an event the broker refused and parks the event after a few,
so one record the broker will never take does not hold back every later event (see "parking" in
clinic_platform.outbox). The index of rows still to send leaves parked ones out.
"""

import sqlalchemy as sa
from alembic import op

revision = "kit_0004"
down_revision = "kit_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "outbox", sa.Column("attempts", sa.SmallInteger, nullable=False, server_default=sa.text("0"))
    )
    op.add_column("outbox", sa.Column("last_error", sa.Text))
    op.add_column("outbox", sa.Column("parked_at", sa.DateTime(timezone=True)))
    op.drop_index("ix_outbox_unpublished", "outbox")
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
    )
    op.create_index("ix_outbox_parked", "outbox", ["id"], postgresql_where=sa.text("parked_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_outbox_parked", "outbox")
    op.drop_index("ix_outbox_unpublished", "outbox")
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.drop_column("outbox", "parked_at")
    op.drop_column("outbox", "last_error")
    op.drop_column("outbox", "attempts")
