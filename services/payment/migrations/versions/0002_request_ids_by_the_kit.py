"""Payments and refunds keep no request fingerprint: the kit's idempotency keys answer retries.

Revision ID: pay_0002
Revises: pay_0001
Create Date: 2026-12-03

CreatePayment and CreateRefund now store their first answer, with the request's fingerprint, in
`idempotency_keys` (scoped to the RPC and the caller), like every other idempotent Create. The
`request_fingerprint` columns of payments and refunds were that mechanism's own copy and nothing
reads them any more. `request_id` stays, unique: it is the idempotency key the provider sees.
"""

import sqlalchemy as sa
from alembic import op

revision = "pay_0002"
down_revision = "pay_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("payments", "request_fingerprint")
    op.drop_column("refunds", "request_fingerprint")


def downgrade() -> None:
    # The fingerprints are gone: rows written since read as "" (no retry matches them).
    for table in ("payments", "refunds"):
        op.add_column(table, sa.Column("request_fingerprint", sa.Text, nullable=False, server_default=""))
