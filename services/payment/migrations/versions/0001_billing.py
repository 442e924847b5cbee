"""Fees, invoices (one per appointment) with their adjustments, payments and refunds.

Revision ID: pay_0001
Revises: kit_0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "pay_0001"
down_revision = "kit_0002"
branch_labels = None
depends_on = None


def _times() -> list[sa.Column]:
    return [
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    ]


def upgrade() -> None:
    op.create_table(
        "fees",
        sa.Column("visit_type", sa.Text, primary_key=True),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("appointment_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("patient_id", sa.Uuid, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("lines", JSONB, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("insurance_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("paid_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("appointment_state", sa.Text, nullable=False),
        sa.Column("appointment_version", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        *_times(),
    )
    op.create_index("ix_invoices_status_created", "invoices", ["status", "create_time"])
    op.create_index("ix_invoices_patient_created", "invoices", ["patient_id", "create_time"])
    op.create_table(
        "invoice_adjustments",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("invoice_id", sa.Uuid, nullable=False),
        sa.Column("adjusted_by", sa.Uuid, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("before_lines", JSONB, nullable=False),
        sa.Column("after_lines", JSONB, nullable=False),
        sa.Column("before_total_minor", sa.BigInteger, nullable=False),
        sa.Column("after_total_minor", sa.BigInteger, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_invoice_adjustments_invoice", "invoice_adjustments", ["invoice_id", "create_time"])
    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("invoice_id", sa.Uuid, nullable=False),
        sa.Column("patient_id", sa.Uuid, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("provider_token", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("failure_code", sa.Text, nullable=False, server_default=""),
        sa.Column("provider_reference", sa.Text, nullable=False, server_default=""),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("request_id", sa.Text, nullable=False, unique=True),
        sa.Column("request_fingerprint", sa.Text, nullable=False),
        *_times(),
    )
    op.create_index("ix_payments_invoice", "payments", ["invoice_id", "create_time"])
    op.create_index("ix_payments_patient", "payments", ["patient_id", "create_time"])
    op.create_index(
        "ix_payments_pending", "payments", ["create_time"], postgresql_where=sa.text("status = 'PENDING'")
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("payment_id", sa.Uuid, nullable=False),
        sa.Column("invoice_id", sa.Uuid, nullable=False),
        sa.Column("patient_id", sa.Uuid, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("failure_code", sa.Text, nullable=False, server_default=""),
        sa.Column("provider_reference", sa.Text, nullable=False, server_default=""),
        sa.Column("refunded_by", sa.Uuid, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False, unique=True),
        sa.Column("request_fingerprint", sa.Text, nullable=False),
        *_times(),
    )
    op.create_index("ix_refunds_payment", "refunds", ["payment_id", "create_time"])
    op.create_index("ix_refunds_invoice", "refunds", ["invoice_id", "create_time"])


def downgrade() -> None:
    for table in ("refunds", "payments", "invoice_adjustments", "invoices", "fees"):
        op.drop_table(table)
