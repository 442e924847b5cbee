"""Tables of the payment database. Amounts are integer minor units with their currency."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, Table, Text, Uuid, func
from sqlalchemy.dialects.postgresql import JSONB

from clinic_platform.db import new_metadata

metadata = new_metadata()

fees = Table(
    "fees",
    metadata,
    Column("visit_type", Text, primary_key=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("appointment_id", Uuid, nullable=False, unique=True),  # one invoice per appointment
    Column("patient_id", Uuid, nullable=False),
    Column("status", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("lines", JSONB, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("insurance_minor", BigInteger, nullable=False, server_default="0"),
    Column("paid_minor", BigInteger, nullable=False, server_default="0"),
    Column("refunded_minor", BigInteger, nullable=False, server_default="0"),
    Column("appointment_state", Text, nullable=False),  # what the appointment's events said last
    Column("appointment_version", Integer, nullable=False),  # ...and at which version
    Column("version", Integer, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_invoices_status_created", "status", "create_time"),
    Index("ix_invoices_patient_created", "patient_id", "create_time"),
)

adjustments = Table(
    "invoice_adjustments",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("invoice_id", Uuid, nullable=False),
    Column("adjusted_by", Uuid, nullable=False),
    Column("reason", Text, nullable=False),
    Column("before_lines", JSONB, nullable=False),
    Column("after_lines", JSONB, nullable=False),
    Column("before_total_minor", BigInteger, nullable=False),
    Column("after_total_minor", BigInteger, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_invoice_adjustments_invoice", "invoice_id", "create_time"),
)

payments = Table(
    "payments",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("invoice_id", Uuid, nullable=False),
    Column("patient_id", Uuid, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("provider_token", Text, nullable=False),  # a provider's one-use token, never card data
    Column("status", Text, nullable=False),
    Column("failure_code", Text, nullable=False, server_default=""),
    Column("provider_reference", Text, nullable=False, server_default=""),
    Column("refunded_minor", BigInteger, nullable=False, server_default="0"),
    Column("request_id", Text, nullable=False, unique=True),  # also the provider's idempotency key
    Column("request_fingerprint", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_payments_invoice", "invoice_id", "create_time"),
    Index("ix_payments_patient", "patient_id", "create_time"),
    Index("ix_payments_pending", "create_time", postgresql_where="status = 'PENDING'"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("payment_id", Uuid, nullable=False),
    Column("invoice_id", Uuid, nullable=False),
    Column("patient_id", Uuid, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("failure_code", Text, nullable=False, server_default=""),
    Column("provider_reference", Text, nullable=False, server_default=""),
    Column("refunded_by", Uuid, nullable=False),
    Column("request_id", Text, nullable=False, unique=True),
    Column("request_fingerprint", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_refunds_payment", "payment_id", "create_time"),
    Index("ix_refunds_invoice", "invoice_id", "create_time"),
)

# An appointment's invoice and its InvoiceCreated event in ONE statement (run on asyncpg by the
# appointment-event consumer); a second event for the appointment inserts neither. Returns the
# invoice id when it was created.
CREATE_INVOICE = """
    WITH created AS (
        INSERT INTO invoices
            (id, appointment_id, patient_id, status, currency, lines, total_minor,
             appointment_state, appointment_version, version, create_time, update_time)
        VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, 1, $10, $10)
        ON CONFLICT (appointment_id) DO NOTHING
        RETURNING id
    ), event AS (
        INSERT INTO outbox (event_id, topic, event_type, aggregate_id, payload, request_id)
        SELECT $11, $12, $13, $14, $15, $16 FROM created
    )
    SELECT id FROM created
"""
