"""Invoices follow their appointments and their money: one invoice per appointment, created by its
first event, its status recomputed (with InvoiceStatusChanged) whenever what it depends on
changes; and an admin's adjustment of its lines."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from clinic.payment.v1 import events_pb2
from clinic_platform.auth import Caller
from clinic_platform.convert import timestamp
from clinic_platform.db import Database
from clinic_platform.money import Amount
from clinic_platform.outbox import Outbox
from payment import domain, store
from payment.domain import Line
from payment.messages import invoice_status

log = logging.getLogger(__name__)
INVOICE_IDS = uuid.UUID("6f0b7e7c-6b0e-4b53-9a4c-1f2f3c1d9e21")  # namespace: one invoice id per appointment


class Invoices:
    def __init__(self, db: Database, outbox: Outbox, *, currency: str, zone: str) -> None:
        self.db = db
        self.outbox = outbox
        self.currency = currency
        self.zone = ZoneInfo(zone)
        self._unpriced: set[str] = set()

    async def follow_appointment(
        self,
        session,
        *,
        appointment_id: str,
        patient_id: str,
        visit_type: str,
        start_time: datetime,
        version: int,
        state: str,
    ) -> None:
        """Create the appointment's invoice on its first event (whichever comes first) and move it
        with newer ones; older or repeated events change nothing."""
        created = await self._create(
            session,
            appointment_id=appointment_id,
            patient_id=patient_id,
            visit_type=visit_type,
            start_time=start_time,
            version=version,
            state=state,
        )
        if created:
            return  # the appointment's first event (whichever it is): nothing older to compare with
        row = await store.lock_invoice_of_appointment(session, uuid.UUID(appointment_id))
        if version <= row.appointment_version:
            return
        await self.refresh(session, row, appointment_state=state, appointment_version=version)

    async def _create(
        self,
        session,
        *,
        appointment_id: str,
        patient_id: str,
        visit_type: str,
        start_time: datetime,
        version: int,
        state: str,
    ) -> bool:
        """The invoice and its InvoiceCreated, unless the appointment has its invoice already."""
        fee = (await store.fee_schedule(session)).get(visit_type)
        if fee is None and visit_type not in self._unpriced:
            self._unpriced.add(visit_type)  # say it once per visit type, not per invoice
            log.warning(
                "no fee for the visit type: its invoice lines are 0 until an admin adjusts them",
                extra={"visit_type": visit_type},
            )
        price = fee or Amount(0, self.currency)
        day = start_time.astimezone(self.zone).date()
        line = Line(f"Visit ({visit_type}) on {day.isoformat()}", visit_type, price)
        zero = Amount(0, price.currency)
        status = domain.invoice_status(state, price, zero, zero)
        now = datetime.now(UTC)
        invoice_id = uuid.uuid5(INVOICE_IDS, appointment_id)
        invoice_created = self.outbox.values(
            events_pb2.InvoiceCreated(
                invoice_id=str(invoice_id),
                version=1,
                patient_id=patient_id,
                appointment_id=appointment_id,
                status=invoice_status(status),
                total_amount=price.to_proto(),
                create_time=timestamp(now),
            ),
            aggregate_id=str(invoice_id),
        )
        invoice = {
            "id": invoice_id,
            "appointment_id": uuid.UUID(appointment_id),
            "patient_id": uuid.UUID(patient_id),
            "status": status,
            "currency": price.currency,
            "lines": [line.to_json()],
            "total_minor": price.minor,
            "appointment_state": state,
            "appointment_version": version,
            "create_time": now,
        }
        return await store.create_invoice(session, invoice, invoice_created)

    async def refresh(self, session, row, **changes):
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
        new = await store.update_invoice(session, row.id, {**changes, "update_time": now})
        if status != row.status:
            await self.outbox.add(
                session,
                events_pb2.InvoiceStatusChanged(
                    invoice_id=str(row.id),
                    version=new.version,
                    patient_id=str(row.patient_id),
                    appointment_id=str(row.appointment_id),
                    old_status=invoice_status(row.status),
                    new_status=invoice_status(status),
                    amount_due=domain.balance_due(total, insurance, paid).to_proto(),
                    change_time=timestamp(now),
                ),
                aggregate_id=str(row.id),
            )
        return new

    async def adjust(self, me: Caller, invoice_id: uuid.UUID, reason: str, lines: list[Line]):
        """An admin's new lines for the invoice, kept in its history with the reason; returns the
        new row."""
        async with self.db.transaction() as session:
            row = domain.found(await store.lock_invoice(session, invoice_id), "invoice", invoice_id)
            new_total = domain.check_lines(lines, row.currency)
            pending = await store.pending_payments_minor(session, invoice_id)
            domain.check_adjustable(row, new_total, pending)
            new_lines = [line.to_json() for line in lines]
            await store.add_adjustment(
                session,
                id=uuid.uuid4(),
                invoice_id=invoice_id,
                adjusted_by=uuid.UUID(me.user_id),
                reason=reason,
                before_lines=row.lines,
                after_lines=new_lines,
                before_total_minor=row.total_minor,
                after_total_minor=new_total.minor,
            )
            return await self.refresh(session, row, lines=new_lines, total_minor=new_total.minor)
