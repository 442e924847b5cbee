"""Every table and query of the payment database; no other module of the service speaks SQL.

Amounts are integer minor units with their currency. Functions that take a `session` run in the
caller's transaction (`Database.transaction()`); those that take `db` read on a connection of
their own. Rows come back as SQLAlchemy rows (attribute access), or None when there is none.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, Table, Text, Uuid, func, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from clinic_platform import outbox
from clinic_platform.db import Database, new_metadata, raw_connection, wrote_events
from clinic_platform.money import Amount
from clinic_platform.pagination import Page, newest_first, newest_first_key

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
    # The client's request_id: the provider's idempotency key for the charge, so it is unique.
    Column("request_id", Text, nullable=False, unique=True),
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
    Column("request_id", Text, nullable=False, unique=True),  # the provider's idempotency key
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_refunds_payment", "payment_id", "create_time"),
    Index("ix_refunds_invoice", "invoice_id", "create_time"),
)


# -- fees -----------------------------------------------------------------------------------------
async def fees_page(db: Database, page: Page) -> tuple[list[Any], str]:
    """Fees by visit type, a page at a time."""
    query = select(fees).order_by(fees.c.visit_type).limit(page.size + 1)
    if page.after:
        query = query.where(fees.c.visit_type > page.after[0])
    return page.take(await _all(db, query), lambda r: [r.visit_type])


async def set_fee(db: Database, visit_type: str, price: Amount, now: datetime, *, create: bool):
    """The visit type's new price (created when `create`); None when it has no fee to change."""
    price_values = {"amount_minor": price.minor, "currency": price.currency, "update_time": now}
    if create:
        statement = (
            insert(fees)
            .values(visit_type=visit_type, **price_values)
            .on_conflict_do_update(index_elements=["visit_type"], set_=price_values)
        )
    else:
        statement = update(fees).where(fees.c.visit_type == visit_type).values(**price_values)
    async with db.transaction() as session:
        return (await session.execute(statement.returning(fees))).first()


async def fee_schedule(session: AsyncSession) -> dict[str, Amount]:
    """The fee of each visit type, read once per transaction (a consumer's batch of events)."""
    if "fees" not in session.info:
        rows = (await session.execute(select(fees))).all()
        session.info["fees"] = {r.visit_type: Amount(r.amount_minor, r.currency) for r in rows}
    return session.info["fees"]


# -- invoices -------------------------------------------------------------------------------------
# An appointment's invoice and its InvoiceCreated event in ONE statement (run on asyncpg by the
# appointment-event consumer); a second event for the appointment inserts neither. Returns the
# invoice id when it was created. Only the kit's outbox columns and their placeholders are
# formatted in, never a value.
CREATE_INVOICE = f"""
    WITH created AS (
        INSERT INTO invoices
            (id, appointment_id, patient_id, status, currency, lines, total_minor,
             appointment_state, appointment_version, version, create_time, update_time)
        VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, 1, $10, $10)
        ON CONFLICT (appointment_id) DO NOTHING
        RETURNING id
    ), event AS (
        INSERT INTO outbox ({", ".join(outbox.COLUMNS)})
        SELECT {", ".join(f"${11 + i}" for i in range(len(outbox.COLUMNS)))} FROM created
    )
    SELECT id FROM created
"""  # noqa: S608


async def create_invoice(session: AsyncSession, invoice: dict[str, Any], invoice_created: tuple) -> bool:
    """Insert the appointment's first invoice with its event (`Outbox.values()`); False when the
    appointment has its invoice already."""
    conn = await raw_connection(session)
    created = await conn.fetchval(
        CREATE_INVOICE,
        invoice["id"],
        invoice["appointment_id"],
        invoice["patient_id"],
        invoice["status"],
        invoice["currency"],
        json.dumps(invoice["lines"]),
        invoice["total_minor"],
        invoice["appointment_state"],
        invoice["appointment_version"],
        invoice["create_time"],
        *invoice_created,
    )
    if created is None:
        return False
    wrote_events(session)
    return True


async def invoice(db: Database, invoice_id: uuid.UUID):
    return await _first(db, select(invoices).where(invoices.c.id == invoice_id))


async def lock_invoice(session: AsyncSession, invoice_id: uuid.UUID):
    """The invoice, locked until the transaction ends: its changes and payments take turns."""
    query = select(invoices).where(invoices.c.id == invoice_id).with_for_update()
    return (await session.execute(query)).first()


async def lock_invoice_of_appointment(session: AsyncSession, appointment_id: uuid.UUID):
    query = select(invoices).where(invoices.c.appointment_id == appointment_id).with_for_update()
    return (await session.execute(query)).first()


async def update_invoice(session: AsyncSession, invoice_id: uuid.UUID, changes: dict[str, Any]):
    """Set columns of a (locked) invoice; returns the new row."""
    statement = update(invoices).where(invoices.c.id == invoice_id).values(**changes).returning(invoices)
    return (await session.execute(statement)).one()


async def invoices_page(db: Database, page: Page, filters: dict[str, Any]) -> tuple[list[Any], str]:
    """Invoices matching the (set) column filters, newest first."""
    return await _newest_first(db, invoices, page, filters)


async def count_invoices(db: Database, filters: dict[str, Any]) -> int:
    conditions = (invoices.c[k] == v for k, v in filters.items() if v)
    query = select(func.count()).select_from(invoices).where(*conditions)
    async with db.engine.connect() as conn:
        return await conn.scalar(query)


async def add_adjustment(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(adjustments).values(**values))


async def adjustments_page(db: Database, page: Page, invoice_id: uuid.UUID) -> tuple[list[Any], str]:
    return await _newest_first(db, adjustments, page, {"invoice_id": invoice_id})


# -- payments -------------------------------------------------------------------------------------
async def add_payment(session: AsyncSession, **values: Any):
    """The new payment; None when its request_id (the provider's key) belongs to another payment."""
    statement = insert(payments).values(**values).on_conflict_do_nothing().returning(payments)
    return (await session.execute(statement)).first()


async def payment(source: Database | AsyncSession, payment_id: uuid.UUID):
    return await _first(source, select(payments).where(payments.c.id == payment_id))


async def lock_payment(session: AsyncSession, payment_id: uuid.UUID):
    """The payment, locked until the transaction ends: its settlement and refunds take turns."""
    query = select(payments).where(payments.c.id == payment_id).with_for_update()
    return (await session.execute(query)).first()


async def pending_payments_minor(session: AsyncSession, invoice_id: uuid.UUID) -> int:
    """Minor units of the invoice's payments still waiting for the provider's answer."""
    return await session.scalar(
        select(func.coalesce(func.sum(payments.c.amount_minor), 0)).where(
            payments.c.invoice_id == invoice_id, payments.c.status == "PENDING"
        )
    )


async def record_payment_outcome(session: AsyncSession, payment_id: uuid.UUID, **outcome: Any):
    """Set the provider's answer (status, provider_reference, failure_code, update_time)."""
    statement = update(payments).where(payments.c.id == payment_id).values(**outcome).returning(payments)
    return (await session.execute(statement)).one()


async def payments_page(db: Database, page: Page, filters: dict[str, Any]) -> tuple[list[Any], str]:
    return await _newest_first(db, payments, page, filters)


# -- refunds --------------------------------------------------------------------------------------
async def add_refund(session: AsyncSession, **values: Any):
    """The new refund; None when its id or request_id (the provider's key) is taken already."""
    statement = insert(refunds).values(**values).on_conflict_do_nothing().returning(refunds)
    return (await session.execute(statement)).first()


async def refund(session: AsyncSession, refund_id: uuid.UUID):
    return (await session.execute(select(refunds).where(refunds.c.id == refund_id))).first()


async def lock_refund(session: AsyncSession, refund_id: uuid.UUID):
    query = select(refunds).where(refunds.c.id == refund_id).with_for_update()
    return (await session.execute(query)).first()


async def pending_refunds_minor(session: AsyncSession, payment_id: uuid.UUID) -> int:
    """Minor units of the payment's refunds still waiting for the provider's answer."""
    return await session.scalar(
        select(func.coalesce(func.sum(refunds.c.amount_minor), 0)).where(
            refunds.c.payment_id == payment_id, refunds.c.status == "PENDING"
        )
    )


async def record_refund_outcome(session: AsyncSession, refund_id: uuid.UUID, **outcome: Any):
    statement = update(refunds).where(refunds.c.id == refund_id).values(**outcome).returning(refunds)
    return (await session.execute(statement)).one()


async def add_refunded(session: AsyncSession, refund, now: datetime) -> None:
    """Count a succeeded refund on its payment and its invoice."""
    await session.execute(
        update(payments)
        .where(payments.c.id == refund.payment_id)
        .values(refunded_minor=payments.c.refunded_minor + refund.amount_minor, update_time=now)
    )
    await session.execute(
        update(invoices)
        .where(invoices.c.id == refund.invoice_id)
        .values(refunded_minor=invoices.c.refunded_minor + refund.amount_minor, update_time=now)
    )


async def refunds_page(db: Database, page: Page, filters: dict[str, Any]) -> tuple[list[Any], str]:
    return await _newest_first(db, refunds, page, filters)


# -- reconciliation -------------------------------------------------------------------------------
async def left_pending(db: Database, before: datetime, limit: int = 100) -> tuple[list[Any], list[Any]]:
    """Payments and refunds still PENDING that were last touched before `before`."""
    async with db.engine.connect() as conn:
        stale_payments = await conn.execute(
            select(payments)
            .where(payments.c.status == "PENDING", payments.c.update_time < before)
            .limit(limit)
        )
        stale_refunds = await conn.execute(
            select(refunds).where(refunds.c.status == "PENDING", refunds.c.update_time < before).limit(limit)
        )
        return stale_payments.all(), stale_refunds.all()


# -- helpers --------------------------------------------------------------------------------------
async def _first(source: Database | AsyncSession, query):
    """The first row of `query`, in the session's transaction or on a connection of its own."""
    if isinstance(source, AsyncSession):
        return (await source.execute(query)).first()
    async with source.engine.connect() as conn:
        return (await conn.execute(query)).first()


async def _all(db: Database, query) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def _newest_first(db: Database, table: Table, page: Page, filters: dict[str, Any]):
    query = newest_first(table, page, *(table.c[k] == v for k, v in filters.items() if v))
    return page.take(await _all(db, query), newest_first_key)
