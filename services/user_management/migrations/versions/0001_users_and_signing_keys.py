"""Users (accounts, roles, credentials, notification preferences) and signing keys.

Revision ID: um_0001
Revises: kit_0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "um_0001"
down_revision = "kit_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("email_key", sa.Text, nullable=False, unique=True),
        sa.Column("given_name", sa.Text, nullable=False),
        sa.Column("family_name", sa.Text, nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("phone_number", sa.Text, nullable=False, server_default=""),
        sa.Column("birth_date", sa.Date),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("specialty", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("preferences", JSONB, nullable=False, server_default="{}"),
        sa.Column(
            "preferences_update_time",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_users_role_name", "users", ["role", "family_name", "given_name", "id"])
    op.create_index("ix_users_name", "users", ["family_name", "given_name", "id"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.Text, primary_key=True),
        sa.Column("public_jwk", sa.Text, nullable=False),
        sa.Column("private_key_sealed", sa.LargeBinary, nullable=False),
        sa.Column("signing_start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_table("users")
