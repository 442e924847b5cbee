"""Doctors and patients (projections of user events), weekly schedules, and calendar entries
(appointments and time off) with the exclusion constraints that make double booking impossible.

Revision ID: ap_0001
Revises: kit_0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "ap_0001"
down_revision = "kit_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")  # a trusted extension: the owner may create it
    op.create_table(
        "doctors",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("specialty", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("user_version", sa.Integer, nullable=False),
    )
    op.create_index("ix_doctors_specialty", "doctors", [sa.text("lower(specialty)")])
    op.create_table(
        "patients",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("user_version", sa.Integer, nullable=False),
    )
    op.create_table(
        "schedules",
        sa.Column("doctor_id", sa.Uuid, primary_key=True),
        sa.Column("slot_minutes", sa.Integer, nullable=False),
        sa.Column("working_hours", JSONB, nullable=False),
        sa.Column("visit_types", JSONB, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "calendar_entries",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("doctor_id", sa.Uuid, nullable=False),
        sa.Column("patient_id", sa.Uuid),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("visit_type", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("cancel_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("changed_by", sa.Uuid),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("request_key", sa.Text, unique=True),
        sa.Column("request_fingerprint", sa.Text),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("end_time > start_time", name="ends_after_start"),
    )
    op.execute(
        "ALTER TABLE calendar_entries ADD CONSTRAINT ex_calendar_doctor_overlap EXCLUDE USING gist "
        "(doctor_id WITH =, tstzrange(start_time, end_time, '[)') WITH &&) "
        "WHERE (status IN ('CONFIRMED', 'COMPLETED', 'BLOCKING'))"
    )
    op.execute(
        "ALTER TABLE calendar_entries ADD CONSTRAINT ex_calendar_patient_overlap EXCLUDE USING gist "
        "(patient_id WITH =, tstzrange(start_time, end_time, '[)') WITH &&) "
        "WHERE (kind = 'APPOINTMENT' AND status IN ('CONFIRMED', 'COMPLETED'))"
    )
    op.create_index("ix_calendar_doctor_start", "calendar_entries", ["doctor_id", "start_time"])
    op.create_index("ix_calendar_patient_start", "calendar_entries", ["patient_id", "start_time"])


def downgrade() -> None:
    for table in ("calendar_entries", "schedules", "patients", "doctors"):
        op.drop_table(table)
