"""Drop calendar_entries.request_key and request_fingerprint: the retry keys of CreateAppointment
and CreateTimeOff (AIP-155 request_id) now live in the kit's idempotency_keys table, with the
answer they gave, like every other service's. Keys are only honoured for 7 days there anyway (the
kit's retention prunes them), so old keys are not carried over: a retry of a request made before
this migration counts as new, and the calendar's overlap constraints refuse the double booking.

Revision ID: ap_0002
Revises: ap_0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "ap_0002"
down_revision = "ap_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Dropping request_key drops its unique constraint and index with it.
    op.drop_column("calendar_entries", "request_fingerprint")
    op.drop_column("calendar_entries", "request_key")


def downgrade() -> None:
    op.add_column("calendar_entries", sa.Column("request_key", sa.Text, unique=True))
    op.add_column("calendar_entries", sa.Column("request_fingerprint", sa.Text))
