"""Taking payments and refunds: CreatePayment and CreateRefund, each idempotent per request_id.

The first answer to a request_id (scoped to the RPC and the caller) is the PENDING payment or
refund, stored by the kit's IdempotencyKeys in the transaction that creates it. A retry reads the
payment or refund named in it: if the provider has answered meanwhile, that is the answer; if it
is still PENDING, it is settled again with the same provider key, so it is charged at most once.
The client's request_id stays the provider's idempotency key (`payments.request_id`, unique)."""

from __future__ import annotations

import uuid

from clinic.payment.v1 import payment_service_pb2 as pb
from clinic_platform import idempotency
from clinic_platform.auth import Caller
from clinic_platform.db import Database
from clinic_platform.errors import InvalidArgument, Unavailable
from clinic_platform.idempotency import IdempotencyKeys
from clinic_platform.money import Amount
from payment import domain, store
from payment.messages import payment_message, refund_message
from payment.providers import ProviderUnavailable
from payment.settlement import Settlement


class Payments:
    def __init__(self, db: Database, settlement: Settlement) -> None:
        self.db = db
        self.settlement = settlement
        self.keys = IdempotencyKeys(db.metadata)

    async def create_payment(
        self,
        me: Caller,
        request: pb.CreatePaymentRequest,
        *,
        invoice_id: uuid.UUID,
        amount: Amount,
        method: str,
        provider_token: str,
        request_id: str,
    ):
        """The payment (new, or the one an earlier try of `request` made), settled if the provider
        answers; raises Unavailable when it does not (the payment stays PENDING). `request` is
        what tells a retry from a different request under the same request_id."""
        scope = idempotency.scope("CreatePayment", me.user_id)
        async with self.db.transaction() as session:
            # The invoice's lock orders its payments, so two payments cannot both take its balance.
            invoice = domain.found(await store.lock_invoice(session, invoice_id), "invoice", invoice_id)
            earlier = await self.keys.claim(
                session, scope, request_id, request, pb.CreatePaymentResponse, what="payment"
            )
            if earlier is not None:
                payment = await store.payment(session, uuid.UUID(earlier.payment.id))
            else:
                domain.may_read(me, str(invoice.patient_id), "invoice", str(invoice_id))
                pending = await store.pending_payments_minor(session, invoice_id)
                domain.check_payable(invoice, amount, pending)
                payment = await store.add_payment(
                    session,
                    id=uuid.uuid4(),
                    invoice_id=invoice_id,
                    patient_id=invoice.patient_id,
                    amount_minor=amount.minor,
                    currency=amount.currency,
                    method=method,
                    provider_token=provider_token,
                    status=domain.PENDING,
                    request_id=request_id,
                )
                if payment is None:  # another caller's payment has this provider key
                    raise InvalidArgument("request_id", "was already used for a different payment")
                response = pb.CreatePaymentResponse(payment=payment_message(payment))
                await self.keys.remember(session, scope, request_id, response)
        if payment.status != domain.PENDING:  # a retry of a settled payment: how it ended
            return payment
        try:
            return await self.settlement.settle_payment(payment)
        except ProviderUnavailable:
            raise Unavailable(
                "the payment provider did not answer; the payment is PENDING and was charged at most once: "
                "retry with the same request_id"
            ) from None

    async def create_refund(
        self,
        me: Caller,
        request: pb.CreateRefundRequest,
        *,
        payment_id: uuid.UUID,
        amount: Amount | None,
        reason: str,
        request_id: str,
    ):
        """The refund of `request` (new, or the one an earlier try of it made), settled if the
        provider answers; `amount` None refunds all that is left of the payment."""
        scope = idempotency.scope("CreateRefund", me.user_id)
        async with self.db.transaction() as session:
            # The payment's lock orders its refunds, so two refunds cannot both take what is left.
            payment = domain.found(await store.lock_payment(session, payment_id), "payment", payment_id)
            earlier = await self.keys.claim(
                session, scope, request_id, request, pb.CreateRefundResponse, what="refund"
            )
            if earlier is not None:
                refund = await store.refund(session, uuid.UUID(earlier.refund.id))
            else:
                pending = await store.pending_refunds_minor(session, payment_id)
                amount = domain.refund_amount(payment, amount, pending)
                refund = await store.add_refund(
                    session,
                    id=uuid.uuid4(),
                    payment_id=payment_id,
                    invoice_id=payment.invoice_id,
                    patient_id=payment.patient_id,
                    amount_minor=amount.minor,
                    currency=amount.currency,
                    reason=reason,
                    status=domain.PENDING,
                    refunded_by=uuid.UUID(me.user_id),
                    request_id=request_id,
                )
                if refund is None:  # another caller's refund has this provider key
                    raise InvalidArgument("request_id", "was already used for a different refund")
                response = pb.CreateRefundResponse(refund=refund_message(refund))
                await self.keys.remember(session, scope, request_id, response)
        if refund.status != domain.PENDING:
            return refund
        try:
            return await self.settlement.settle_refund(refund)
        except ProviderUnavailable:
            raise Unavailable(
                "the payment provider did not answer; the refund is PENDING and was made at most once: "
                "retry with the same request_id"
            ) from None
