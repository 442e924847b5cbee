"""Inbox rows are pruned by age: index their arrival time.

Revision ID: kit_0003
Revises: kit_0002
Create Date: 2026-12-02

From here the kit's revisions are a branch of their own beside each service's (both descend from
kit_0002), so migrations upgrade to "heads".
"""

from alembic import op

revision = "kit_0003"
down_revision = "kit_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_inbox_received_at", "inbox", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_inbox_received_at", "inbox")
