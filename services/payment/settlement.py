"""Settling payments and refunds with the provider, and the reconciler that settles those whose
clients never came back after a timeout.

A PENDING payment or refund is asked about (again) with the idempotency key it was created with,
so a retry can never charge or refund twice; the provider's answer is recorded once, whoever
(a retry or the reconciler) gets it first."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

from clinic.payment.v1 import events_pb2, resources_pb2
from clinic_platform.convert import enum_value, timestamp
from clinic_platform.db import Database
from clinic_platform.money import Amount
from clinic_platform.outbox import Outbox
from clinic_platform.periodic import run_every
from payment import domain, store
from payment.invoices import Invoices
from payment.providers import Adapter, Outcome, ProviderUnavailable

log = logging.getLogger(__name__)
AUTOMATIC_REFUNDS = uuid.UUID("0c5d3a52-93c4-4d8e-9a0e-7b1e62f4a3d1")  # namespace: one per payment
SYSTEM = uuid.UUID(int=0)  # who issued a refund the service made by itself


class Settlement:
    def __init__(self, db: Database, outbox: Outbox, invoices: Invoices, providers: dict[str, Adapter]):
        self.db = db
        self.outbox = outbox
        self.invoices = invoices
        self.providers = providers

    # -- payments ---------------------------------------------------------------------------------
    async def settle_payment(self, payment):
        """Ask the provider (again) about a PENDING payment, with its idempotency key, and record
        the outcome; raises ProviderUnavailable when there is still no answer."""
        adapter = self.providers[payment.method]
        amount = Amount(payment.amount_minor, payment.currency)
        outcome = await adapter.charge(payment.provider_token, amount, payment.request_id)
        return await self._record_payment(payment.id, outcome)

    async def _record_payment(self, payment_id: uuid.UUID, outcome: Outcome):
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            payment = await store.lock_payment(session, payment_id)
            if payment.status != domain.PENDING:
                return payment  # settled meanwhile (a retry and the reconciler raced)
            payment = await store.record_payment_outcome(
                session,
                payment_id,
                status=domain.SUCCEEDED if outcome.succeeded else domain.FAILED,
                provider_reference=outcome.reference,
                failure_code=outcome.failure_code,
                update_time=now,
            )
            common = {
                "payment_id": str(payment.id),
                "invoice_id": str(payment.invoice_id),
                "patient_id": str(payment.patient_id),
                "amount": Amount(payment.amount_minor, payment.currency).to_proto(),
                "method": enum_value(resources_pb2.PaymentMethod, payment.method),
            }
            if outcome.succeeded:
                invoice = await store.lock_invoice(session, payment.invoice_id)
                await self.invoices.refresh(
                    session, invoice, paid_minor=invoice.paid_minor + payment.amount_minor
                )
                if invoice.status == domain.VOIDED:
                    await self._give_back(session, payment)
                event = events_pb2.PaymentSucceeded(**common, payment_time=timestamp(now))
            else:
                event = events_pb2.PaymentFailed(
                    **common, reason_code=outcome.failure_code, fail_time=timestamp(now)
                )
            await self.outbox.add(session, event, aggregate_id=str(payment.invoice_id))
        return payment

    async def _give_back(self, session, payment) -> None:
        """A payment that settled after its invoice was voided (the appointment was cancelled while
        the provider's answer was outstanding) is refunded in full; the reconciler sends it."""
        refund_id = uuid.uuid5(AUTOMATIC_REFUNDS, str(payment.id))
        await store.add_refund(
            session,
            id=refund_id,
            payment_id=payment.id,
            invoice_id=payment.invoice_id,
            patient_id=payment.patient_id,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            reason="the invoice was voided before this payment settled",
            status=domain.PENDING,
            refunded_by=SYSTEM,
            request_id=str(refund_id),
        )
        log.warning(
            "a payment settled on a voided invoice: refunding it",
            extra={"payment_id": str(payment.id), "invoice_id": str(payment.invoice_id)},
        )

    # -- refunds ----------------------------------------------------------------------------------
    async def settle_refund(self, refund):
        """Ask the provider (again) about a PENDING refund, with its idempotency key, and record
        the outcome; raises ProviderUnavailable when there is still no answer."""
        payment = await store.payment(self.db, refund.payment_id)
        outcome = await self.providers[payment.method].refund(
            payment.provider_reference, Amount(refund.amount_minor, refund.currency), refund.request_id
        )
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            refund = await store.lock_refund(session, refund.id)
            if refund.status != domain.PENDING:
                return refund
            refund = await store.record_refund_outcome(
                session,
                refund.id,
                status=domain.SUCCEEDED if outcome.succeeded else domain.FAILED,
                provider_reference=outcome.reference,
                failure_code=outcome.failure_code,
                update_time=now,
            )
            if outcome.succeeded:
                await store.add_refunded(session, refund, now)
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

    # -- reconciliation ---------------------------------------------------------------------------
    async def reconcile(
        self,
        stopping: asyncio.Event,
        *,
        every_seconds: float = 15.0,
        older_than: timedelta = timedelta(seconds=10),
    ) -> None:
        """Background: settle payments and refunds whose clients never came back after a timeout."""
        await run_every(
            every_seconds, lambda: self._reconcile_once(older_than), stopping, failure="reconciliation failed"
        )

    async def _reconcile_once(self, older_than: timedelta) -> None:
        payments, refunds = await store.left_pending(self.db, datetime.now(UTC) - older_than)
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
