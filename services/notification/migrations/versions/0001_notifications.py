"""Recipients (a projection of user events), notices, deliveries, source events kept for the DLQ,
reminders and templates.

Revision ID: nt_0001
Revises: kit_0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "nt_0001"
down_revision = "kit_0002"
branch_labels = None
depends_on = None


def _now(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "recipients",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("phone_number", sa.Text, nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("preferences", JSONB, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("user_version", sa.Integer, nullable=False),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("source_event_id", sa.Uuid, nullable=False),
        sa.Column("recipient_id", sa.Uuid, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("variables", JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        _now("create_time"),
        sa.UniqueConstraint("source_event_id", "recipient_id", name="uq_notices_event_recipient"),
    )
    op.create_index("ix_notices_new", "notices", ["create_time"], postgresql_where=sa.text("status = 'NEW'"))
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("notice_id", sa.Uuid, nullable=False),
        sa.Column("source_event_id", sa.Uuid, nullable=False),
        sa.Column("recipient_id", sa.Uuid, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("html", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
        _now("next_attempt_time"),
        _now("create_time"),
        sa.Column("send_time", sa.DateTime(timezone=True)),
        _now("update_time"),
        sa.UniqueConstraint(
            "source_event_id", "recipient_id", "channel", name="uq_deliveries_event_recipient_channel"
        ),
    )
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_time"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    op.create_index("ix_deliveries_recipient", "deliveries", ["recipient_id", "create_time"])
    op.create_table(
        "source_events",
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("aggregate_key", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "reminders",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("appointment_id", sa.Uuid, nullable=False),
        sa.Column("patient_id", sa.Uuid, nullable=False),
        sa.Column("doctor_id", sa.Uuid, nullable=False),
        sa.Column("visit_type", sa.Text, nullable=False),
        sa.Column("appointment_start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("send_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("appointment_version", sa.Integer, nullable=False),
        _now("create_time"),
        _now("update_time"),
    )
    op.create_index(
        "ix_reminders_due", "reminders", ["send_time"], postgresql_where=sa.text("status = 'SCHEDULED'")
    )
    op.create_index("ix_reminders_appointment", "reminders", ["appointment_id"])
    op.create_table(
        "templates",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        _now("update_time"),
        sa.UniqueConstraint("event_type", "channel", name="uq_templates_event_channel"),
    )


def downgrade() -> None:
    for table in ("templates", "reminders", "source_events", "deliveries", "notices", "recipients"):
        op.drop_table(table)
