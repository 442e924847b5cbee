"""The kit's tables: outbox, inbox and relay state.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from clinic_platform.migrations import create_platform_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables()


def downgrade() -> None:
    raise NotImplementedError("the first migration is not reversible: drop the database instead")
