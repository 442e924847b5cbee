"""Billing operations shared by the API, the appointment-event consumer and the reconciler:
invoices that follow appointments, and settling payments and refunds with the provider."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.appointments.v1 import events_pb2 as appointment_events
from clinic.payment.v1 import events_pb2, resources_pb2
from clinic_platform.convert import enum_value, timestamp
from clinic_platform.db import Database, raw_connection, wrote_events
from clinic_platform.events import EventEnvelope
from clinic_platform.money import Amount
from clinic_platform.outbox import Outbox
from payment import domain, store
from payment.domain import Line
from payment.providers import Adapter, Outcome, ProviderUnavailable

log = logging.getLogger(__name__)
INVOICE_IDS = uuid.UUID("6f0b7e7c-6b0e-4b53-9a4c-1f2f3c1d9e21")  # namespace: one invoice id per appointment
AUTOMATIC_REFUNDS = uuid.UUID("0c5d3a52-93c4-4d8e-9a0e-7b1e62f4a3d1")  # namespace: one per payment
SYSTEM = uuid.UUID(int=0)  # who issued a refund the service made by itself

STATE_OF_EVENT = {
    appointment_events.AppointmentBooked: domain.BOOKED,
    appointment_events.AppointmentRescheduled: domain.BOOKED,
    appointment_events.AppointmentCompleted: domain.COMPLETED,
    appointment_events.AppointmentNoShow: domain.NO_SHOW,
    appointment_events.AppointmentCancelled: domain.CANCELLED,
}


def amounts(row) -> tuple[Amount, Amount, Amount]:
    return (
        Amount(row.total_minor, row.currency),
        Amount(row.insurance_minor, row.currency),
        Amount(row.paid_minor, row.currency),
    )


def status_enum(status: str) -> int:
    return enum_value(resources_pb2.InvoiceStatus, status)


class Billing:
    def __init__(
        self, db: Database, outbox: Outbox, *, currency: str, zone: str, providers: dict[str, Adapter]
    ):
        self.db = db
        self.outbox = outbox
        self.currency = currency
        self.zone = ZoneInfo(zone)
        self.providers = providers
        self._unpriced: set[str] = set()

    # -- invoices follow appointments -------------------------------------------------------------
    async def on_appointment_event(self, session: AsyncSession, event, envelope: EventEnvelope) -> None:
        """Create the appointment's invoice on its first event (whichever comes first) and move it
        with newer ones; older or repeated events change nothing."""
        state = STATE_OF_EVENT[type(event)]
        if await self._create_invoice(session, event, state):
            return  # the appointment's first event (whichever it is): nothing older to compare with
        row = await self._invoice_of(session, uuid.UUID(event.appointment_id))
        if event.version <= row.appointment_version:
            return
        await self.refresh(session, row, appointment_state=state, appointment_version=event.version)

    async def _invoice_of(self, session: AsyncSession, appointment_id: uuid.UUID):
        query = (
            select(store.invoices).where(store.invoices.c.appointment_id == appointment_id).with_for_update()
        )
        return (await session.execute(query)).first()

    async def _fees(self, session: AsyncSession) -> dict[str, Amount]:
        """The fee schedule, read once per consumer transaction (a batch of events)."""
        if "fees" not in session.info:
            rows = (await session.execute(select(store.fees))).all()
            session.info["fees"] = {r.visit_type: Amount(r.amount_minor, r.currency) for r in rows}
        return session.info["fees"]

    async def _create_invoice(self, session: AsyncSession, event, state: str) -> bool:
        """The invoice and its InvoiceCreated, unless the appointment has its invoice already."""
        fee = (await self._fees(session)).get(event.visit_type)
        if fee is None and event.visit_type not in self._unpriced:
            self._unpriced.add(event.visit_type)  # say it once per visit type, not per invoice
            log.warning(
                "no fee for the visit type: its invoice lines are 0 until an admin adjusts them",
                extra={"visit_type": event.visit_type},
            )
        price = fee or Amount(0, self.currency)
        day = event.start_time.ToDatetime(tzinfo=UTC).astimezone(self.zone).date()
        line = Line(f"Visit ({event.visit_type}) on {day.isoformat()}", event.visit_type, price)
        zero = Amount(0, price.currency)
        status = domain.invoice_status(state, price, zero, zero)
        now = datetime.now(UTC)
        invoice_id = uuid.uuid5(INVOICE_IDS, event.appointment_id)
        invoice_created = self.outbox.values(
            events_pb2.InvoiceCreated(
                invoice_id=str(invoice_id),
                version=1,
                patient_id=event.patient_id,
                appointment_id=event.appointment_id,
                status=status_enum(status),
                total_amount=price.to_proto(),
                create_time=timestamp(now),
            ),
            aggregate_id=str(invoice_id),
        )
        conn = await raw_connection(session)
        created = await conn.fetchval(
            store.CREATE_INVOICE,
            invoice_id,
            uuid.UUID(event.appointment_id),
            uuid.UUID(event.patient_id),
            status,
            price.currency,
            json.dumps([line.to_json()]),
            price.minor,
            state,
            event.version,
            now,
            *invoice_created,
        )
        if created is None:
            return False
        wrote_events(session)
        return True

    async def refresh(self, session: AsyncSession, row, **changes):
        """Apply `changes` to an invoice (locked by the caller), recompute its status, publish
        InvoiceStatusChanged when it moved; returns the new row."""
        merged = {**row._mapping, **changes}
        total = Amount(merged["total_minor"], row.currency)
        insurance = Amount(merged["insurance_minor"], row.currency)
        paid = Amount(merged["paid_minor"], row.currency)
        status = domain.invoice_status(merged["appointment_state"], total, insurance, paid)
        now = datetime.now(UTC)
        if status != row.status:
            changes |= {"status": status, "version": row.version + 1}
        new = (
            await session.execute(
                update(store.invoices)
                .where(store.invoices.c.id == row.id)
                .values(**changes, update_time=now)
                .returning(store.invoices)
            )
        ).one()
        if status != row.status:
            await self.outbox.add(
                session,
                events_pb2.InvoiceStatusChanged(
                    invoice_id=str(row.id),
                    version=new.version,
                    patient_id=str(row.patient_id),
                    appointment_id=str(row.appointment_id),
                    old_status=status_enum(row.status),
                    new_status=status_enum(status),
                    amount_due=domain.balance_due(total, insurance, paid).to_proto(),
                    change_time=timestamp(now),
                ),
                aggregate_id=str(row.id),
            )
        return new

    # -- settling with the provider ---------------------------------------------------------------
    async def settle_payment(self, payment) -> object:
        """Ask the provider (again) about a PENDING payment, with its idempotency key, and record
        the outcome; raises ProviderUnavailable when there is still no answer."""
        adapter = self.providers[payment.method]
        amount = Amount(payment.amount_minor, payment.currency)
        outcome = await adapter.charge(payment.provider_token, amount, payment.request_id)
        return await self._record_payment(payment.id, outcome)

    async def _record_payment(self, payment_id: uuid.UUID, outcome: Outcome):
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            payment = (
                await session.execute(
                    select(store.payments).where(store.payments.c.id == payment_id).with_for_update()
                )
            ).one()
            if payment.status != "PENDING":
                return payment  # settled meanwhile (a retry and the reconciler raced)
            status = "SUCCEEDED" if outcome.succeeded else "FAILED"
            payment = (
                await session.execute(
                    update(store.payments)
                    .where(store.payments.c.id == payment_id)
                    .values(
                        status=status,
                        provider_reference=outcome.reference,
                        failure_code=outcome.failure_code,
                        update_time=now,
                    )
                    .returning(store.payments)
                )
            ).one()
            amount = Amount(payment.amount_minor, payment.currency).to_proto()
            method = enum_value(resources_pb2.PaymentMethod, payment.method)
            common = {
                "payment_id": str(payment.id),
                "invoice_id": str(payment.invoice_id),
                "patient_id": str(payment.patient_id),
                "amount": amount,
                "method": method,
            }
            if outcome.succeeded:
                invoice = (
                    await session.execute(
                        select(store.invoices)
                        .where(store.invoices.c.id == payment.invoice_id)
                        .with_for_update()
                    )
                ).one()
                await self.refresh(session, invoice, paid_minor=invoice.paid_minor + payment.amount_minor)
                if invoice.status == "VOIDED":
                    await self._give_back(session, payment)
                event = events_pb2.PaymentSucceeded(**common, payment_time=timestamp(now))
            else:
                event = events_pb2.PaymentFailed(
                    **common, reason_code=outcome.failure_code, fail_time=timestamp(now)
                )
            await self.outbox.add(session, event, aggregate_id=str(payment.invoice_id))
        return payment

    async def _give_back(self, session: AsyncSession, payment) -> None:
        """A payment that settled after its invoice was voided (the appointment was cancelled while
        the provider's answer was outstanding) is refunded in full; the reconciler sends it."""
        refund_id = uuid.uuid5(AUTOMATIC_REFUNDS, str(payment.id))
        await session.execute(
            insert(store.refunds)
            .values(
                id=refund_id,
                payment_id=payment.id,
                invoice_id=payment.invoice_id,
                patient_id=payment.patient_id,
                amount_minor=payment.amount_minor,
                currency=payment.currency,
                reason="the invoice was voided before this payment settled",
                status="PENDING",
                refunded_by=SYSTEM,
                request_id=str(refund_id),
                request_fingerprint="automatic",
            )
            .on_conflict_do_nothing()
        )
        log.warning(
            "a payment settled on a voided invoice: refunding it",
            extra={"payment_id": str(payment.id), "invoice_id": str(payment.invoice_id)},
        )

    async def settle_refund(self, refund) -> object:
        payment = await self._payment(refund.payment_id)
        outcome = await self.providers[payment.method].refund(
            payment.provider_reference, Amount(refund.amount_minor, refund.currency), refund.request_id
        )
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            refund = (
                await session.execute(
                    select(store.refunds).where(store.refunds.c.id == refund.id).with_for_update()
                )
            ).one()
            if refund.status != "PENDING":
                return refund
            status = "SUCCEEDED" if outcome.succeeded else "FAILED"
            refund = (
                await session.execute(
                    update(store.refunds)
                    .where(store.refunds.c.id == refund.id)
                    .values(
                        status=status,
                        provider_reference=outcome.reference,
                        failure_code=outcome.failure_code,
                        update_time=now,
                    )
                    .returning(store.refunds)
                )
            ).one()
            if outcome.succeeded:
                await session.execute(
                    update(store.payments)
                    .where(store.payments.c.id == refund.payment_id)
                    .values(
                        refunded_minor=store.payments.c.refunded_minor + refund.amount_minor, update_time=now
                    )
                )
                await session.execute(
                    update(store.invoices)
                    .where(store.invoices.c.id == refund.invoice_id)
                    .values(
                        refunded_minor=store.invoices.c.refunded_minor + refund.amount_minor, update_time=now
                    )
                )
                await self.outbox.add(
                    session,
                    events_pb2.RefundIssued(
                        refund_id=str(refund.id),
                        payment_id=str(refund.payment_id),
                        invoice_id=str(refund.invoice_id),
                        patient_id=str(refund.patient_id),
                        amount=Amount(refund.amount_minor, refund.currency).to_proto(),
                        refund_time=timestamp(now),
                    ),
                    aggregate_id=str(refund.invoice_id),
                )
        return refund

    async def _payment(self, payment_id: uuid.UUID):
        async with self.db.engine.connect() as conn:
            return (await conn.execute(select(store.payments).where(store.payments.c.id == payment_id))).one()

    async def reconcile(
        self, stopping, *, every_seconds: float = 15.0, older_than: timedelta = timedelta(seconds=10)
    ):
        """Background: settle payments and refunds whose clients never came back after a timeout."""
        while not stopping.is_set():
            try:
                await self._reconcile_once(older_than)
            except Exception as exc:  # the database may be down: try again next round
                log.warning("reconciliation failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=every_seconds)

    async def _reconcile_once(self, older_than: timedelta) -> None:
        cutoff = datetime.now(UTC) - older_than
        async with self.db.engine.connect() as conn:
            payments = (
                await conn.execute(
                    select(store.payments)
                    .where(store.payments.c.status == "PENDING", store.payments.c.update_time < cutoff)
                    .limit(100)
                )
            ).all()
            refunds = (
                await conn.execute(
                    select(store.refunds)
                    .where(store.refunds.c.status == "PENDING", store.refunds.c.update_time < cutoff)
                    .limit(100)
                )
            ).all()
        for payment in payments:
            try:
                await self.settle_payment(payment)
            except ProviderUnavailable:
                return  # still down: the next round tries again
        for refund in refunds:
            try:
                await self.settle_refund(refund)
            except ProviderUnavailable:
                return
