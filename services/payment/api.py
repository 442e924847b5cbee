"""The PaymentService servicer: requests in (checked and turned into domain values, the caller's
identity), the answer out. Rules live in domain.py, queries in store.py, the flows in
invoices.py (adjustments), payments.py (payments and refunds) and settlement.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from clinic.payment.v1 import payment_service_pb2 as pb
from clinic.payment.v1 import payment_service_pb2_grpc as rpc
from clinic.payment.v1 import resources_pb2
from clinic_platform import auth
from clinic_platform.auth import Role
from clinic_platform.convert import enum_name, mask_paths, parse_enum, parse_uuid
from clinic_platform.db import Database
from clinic_platform.errors import InvalidArgument, NotFound
from clinic_platform.money import from_proto
from clinic_platform.pagination import page_request
from payment import domain, store
from payment.domain import Line
from payment.invoices import Invoices
from payment.messages import adjustment_message, fee_message, invoice_message, payment_message, refund_message
from payment.payments import Payments

MAX_REASON = 500


def _request_id(value: str) -> str:
    """The client's request_id, spelled one way (it is also the provider's idempotency key)."""
    if not value:
        raise InvalidArgument("request_id", "is required: a client-chosen UUID, reused when retrying")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument("request_id", "must be a UUID chosen by the client") from None


def _page(request, filters: dict):
    return page_request(
        request.page_size, request.page_token, {k: str(v) for k, v in filters.items()}, maximum=500
    )


class PaymentApi(rpc.PaymentServiceServicer):
    def __init__(self, db: Database, invoices: Invoices, payments: Payments) -> None:
        self.db = db
        self.invoices = invoices
        self.payments = payments

    # -- fees -------------------------------------------------------------------------------------
    async def ListFees(self, request, context):
        auth.caller()
        page = page_request(request.page_size, request.page_token, default=100, maximum=500)
        rows, token = await store.fees_page(self.db, page)
        return pb.ListFeesResponse(fees=[fee_message(r) for r in rows], next_page_token=token)

    async def UpdateFee(self, request, context):
        auth.require_role(Role.ADMIN)
        visit_type = request.visit_type.strip()
        if not visit_type:
            raise InvalidArgument("visit_type", "is required")
        mask_paths(request.update_mask, {"price"})
        price = from_proto(request.fee.price, "fee.price")
        now = datetime.now(UTC)
        row = await store.set_fee(self.db, visit_type, price, now, create=request.allow_missing)
        if row is None:
            raise NotFound(f"no fee for visit type {visit_type!r} (set allow_missing to create it)")
        return pb.UpdateFeeResponse(fee=fee_message(row))

    # -- invoices ---------------------------------------------------------------------------------
    async def _readable_invoice(self, me: auth.Caller, invoice_id: uuid.UUID):
        invoice = domain.found(await store.invoice(self.db, invoice_id), "invoice", invoice_id)
        domain.may_read(me, str(invoice.patient_id), "invoice", str(invoice_id))
        return invoice

    async def GetInvoice(self, request, context):
        me = auth.caller()
        invoice = await self._readable_invoice(me, parse_uuid(request.invoice_id, "invoice_id"))
        return pb.GetInvoiceResponse(invoice=invoice_message(invoice))

    async def ListInvoices(self, request, context):
        me = auth.caller()
        patient_id = str(parse_uuid(request.patient_id, "patient_id")) if request.patient_id else ""
        patient_id = domain.list_scope(me, patient_id)
        status = parse_enum(resources_pb2.InvoiceStatus, request.status, "status") if request.status else None
        appointment_id = (
            parse_uuid(request.appointment_id, "appointment_id") if request.appointment_id else None
        )
        filters = {"status": status, "patient_id": patient_id or None, "appointment_id": appointment_id}
        rows, token = await store.invoices_page(self.db, _page(request, filters), filters)
        total = await store.count_invoices(self.db, filters)
        return pb.ListInvoicesResponse(
            invoices=[invoice_message(r) for r in rows], next_page_token=token, total_size=total
        )

    async def UpdateInvoice(self, request, context):
        me = auth.require_role(Role.ADMIN)
        invoice_id = parse_uuid(request.invoice_id, "invoice_id")
        reason = request.reason.strip()
        if not reason:
            raise InvalidArgument("reason", "is required: say why the invoice is adjusted")
        if len(reason) > MAX_REASON:
            raise InvalidArgument("reason", f"must have at most {MAX_REASON} characters")
        mask_paths(request.update_mask, {"lines"})
        lines = [
            Line(
                line.description.strip(),
                line.visit_type.strip(),
                from_proto(line.amount, f"invoice.lines[{i}].amount"),
            )
            for i, line in enumerate(request.invoice.lines)
        ]
        invoice = await self.invoices.adjust(me, invoice_id, reason, lines)
        return pb.UpdateInvoiceResponse(invoice=invoice_message(invoice))

    async def ListInvoiceAdjustments(self, request, context):
        me = auth.caller()
        invoice_id = parse_uuid(request.invoice_id, "invoice_id")
        invoice = await self._readable_invoice(me, invoice_id)
        page = _page(request, {"invoice_id": invoice_id})
        rows, token = await store.adjustments_page(self.db, page, invoice_id)
        return pb.ListInvoiceAdjustmentsResponse(
            adjustments=[adjustment_message(r, invoice.currency) for r in rows], next_page_token=token
        )

    # -- payments ---------------------------------------------------------------------------------
    async def CreatePayment(self, request, context):
        me = auth.caller()
        request_id = _request_id(request.request_id)
        wanted = request.payment
        invoice_id = parse_uuid(wanted.invoice_id, "payment.invoice_id")
        if wanted.method == resources_pb2.PAYMENT_METHOD_UNSPECIFIED:
            raise InvalidArgument("payment.method", "is required: CARD, PAYPAL or APPLE_PAY")
        method = enum_name(resources_pb2.PaymentMethod, wanted.method)
        if not wanted.provider_token:
            raise InvalidArgument("payment.provider_token", "is required: the token the provider issued")
        amount = from_proto(wanted.amount, "payment.amount", allow_zero=False)
        payment = await self.payments.create_payment(
            me,
            request,
            invoice_id=invoice_id,
            amount=amount,
            method=method,
            provider_token=wanted.provider_token,
            request_id=request_id,
        )
        return pb.CreatePaymentResponse(payment=payment_message(payment))

    async def GetPayment(self, request, context):
        me = auth.caller()
        payment_id = parse_uuid(request.payment_id, "payment_id")
        payment = domain.found(await store.payment(self.db, payment_id), "payment", payment_id)
        domain.may_read(me, str(payment.patient_id), "payment", str(payment_id))
        return pb.GetPaymentResponse(payment=payment_message(payment))

    async def ListPayments(self, request, context):
        me = auth.caller()
        patient_id = str(parse_uuid(request.patient_id, "patient_id")) if request.patient_id else ""
        patient_id = domain.list_scope(me, patient_id)
        invoice_id = parse_uuid(request.invoice_id, "invoice_id") if request.invoice_id else None
        filters = {"patient_id": patient_id or None, "invoice_id": invoice_id}
        rows, token = await store.payments_page(self.db, _page(request, filters), filters)
        return pb.ListPaymentsResponse(payments=[payment_message(r) for r in rows], next_page_token=token)

    # -- refunds ----------------------------------------------------------------------------------
    async def CreateRefund(self, request, context):
        me = auth.require_role(Role.ADMIN)
        request_id = _request_id(request.request_id)
        wanted = request.refund
        payment_id = parse_uuid(wanted.payment_id, "refund.payment_id")
        reason = wanted.reason.strip()
        if not reason:
            raise InvalidArgument("refund.reason", "is required")
        has_amount = wanted.amount.currency_code or wanted.amount.units or wanted.amount.nanos
        amount = from_proto(wanted.amount, "refund.amount", allow_zero=False) if has_amount else None
        refund = await self.payments.create_refund(
            me, request, payment_id=payment_id, amount=amount, reason=reason, request_id=request_id
        )
        return pb.CreateRefundResponse(refund=refund_message(refund))

    async def ListRefunds(self, request, context):
        me = auth.caller()
        payment_id = parse_uuid(request.payment_id, "payment_id") if request.payment_id else None
        invoice_id = parse_uuid(request.invoice_id, "invoice_id") if request.invoice_id else None
        patient_id = domain.list_scope(me, "")
        filters = {"patient_id": patient_id or None, "payment_id": payment_id, "invoice_id": invoice_id}
        rows, token = await store.refunds_page(self.db, _page(request, filters), filters)
        return pb.ListRefundsResponse(refunds=[refund_message(r) for r in rows], next_page_token=token)
