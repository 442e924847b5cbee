"""The PaymentService servicer: proto <-> domain mapping around billing."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as upsert

from clinic.payment.v1 import payment_service_pb2 as pb
from clinic.payment.v1 import payment_service_pb2_grpc as rpc
from clinic.payment.v1 import resources_pb2
from clinic_platform import auth
from clinic_platform.auth import Role
from clinic_platform.convert import enum_name, enum_value, mask_paths, parse_enum, parse_uuid, timestamp
from clinic_platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from clinic_platform.money import Amount, from_proto
from clinic_platform.pagination import newest_first, newest_first_key, page_request
from payment import domain, store
from payment.billing import Billing, amounts
from payment.domain import Line
from payment.providers import ProviderUnavailable

MAX_REASON = 500


def invoice_message(row) -> resources_pb2.Invoice:
    total, insurance, paid = amounts(row)
    return resources_pb2.Invoice(
        id=str(row.id),
        patient_id=str(row.patient_id),
        appointment_id=str(row.appointment_id),
        status=enum_value(resources_pb2.InvoiceStatus, row.status),
        lines=[line_message(Line.from_json(line, row.currency)) for line in row.lines],
        total_amount=total.to_proto(),
        insurance_amount=insurance.to_proto(),
        paid_amount=paid.to_proto(),
        refunded_amount=Amount(row.refunded_minor, row.currency).to_proto(),
        balance_due=domain.balance_due(total, insurance, paid).to_proto(),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def line_message(line: Line) -> resources_pb2.InvoiceLine:
    return resources_pb2.InvoiceLine(
        description=line.description, visit_type=line.visit_type, amount=line.amount.to_proto()
    )


def payment_message(row) -> resources_pb2.Payment:
    return resources_pb2.Payment(
        id=str(row.id),
        invoice_id=str(row.invoice_id),
        patient_id=str(row.patient_id),
        amount=Amount(row.amount_minor, row.currency).to_proto(),
        method=enum_value(resources_pb2.PaymentMethod, row.method),
        status=enum_value(resources_pb2.PaymentStatus, row.status),
        failure_code=row.failure_code,
        provider_reference=row.provider_reference,
        refunded_amount=Amount(row.refunded_minor, row.currency).to_proto(),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def refund_message(row) -> resources_pb2.Refund:
    return resources_pb2.Refund(
        id=str(row.id),
        payment_id=str(row.payment_id),
        invoice_id=str(row.invoice_id),
        amount=Amount(row.amount_minor, row.currency).to_proto(),
        reason=row.reason,
        status=enum_value(resources_pb2.RefundStatus, row.status),
        failure_code=row.failure_code,
        refunded_by=str(row.refunded_by),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


def _request_id(value: str) -> str:
    if not value:
        raise InvalidArgument("request_id", "is required: a client-chosen UUID, reused when retrying")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument("request_id", "must be a UUID chosen by the client") from None


class PaymentApi(rpc.PaymentServiceServicer):
    def __init__(self, billing: Billing) -> None:
        self.billing = billing
        self.db = billing.db

    # -- fees -------------------------------------------------------------------------------------
    async def ListFees(self, request, context):
        auth.caller()
        page = page_request(request.page_size, request.page_token, default=100, maximum=500)
        query = select(store.fees).order_by(store.fees.c.visit_type).limit(page.size + 1)
        if page.after:
            query = query.where(store.fees.c.visit_type > page.after[0])
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        rows, token = page.take(rows, lambda r: [r.visit_type])
        fees = [
            resources_pb2.Fee(
                visit_type=r.visit_type,
                price=Amount(r.amount_minor, r.currency).to_proto(),
                update_time=timestamp(r.update_time),
            )
            for r in rows
        ]
        return pb.ListFeesResponse(fees=fees, next_page_token=token)

    async def UpdateFee(self, request, context):
        auth.require_role(Role.ADMIN)
        visit_type = request.visit_type.strip()
        if not visit_type:
            raise InvalidArgument("visit_type", "is required")
        mask_paths(request.update_mask, {"price"})
        price = from_proto(request.fee.price, "fee.price")
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            if request.allow_missing:
                statement = upsert(store.fees).values(
                    visit_type=visit_type, amount_minor=price.minor, currency=price.currency, update_time=now
                )
                statement = statement.on_conflict_do_update(
                    index_elements=["visit_type"],
                    set_={"amount_minor": price.minor, "currency": price.currency, "update_time": now},
                )
            else:
                statement = (
                    update(store.fees)
                    .where(store.fees.c.visit_type == visit_type)
                    .values(amount_minor=price.minor, currency=price.currency, update_time=now)
                )
            row = (await session.execute(statement.returning(store.fees))).first()
        if row is None:
            raise NotFound(f"no fee for visit type {visit_type!r} (set allow_missing to create it)")
        return pb.UpdateFeeResponse(
            fee=resources_pb2.Fee(
                visit_type=row.visit_type, price=price.to_proto(), update_time=timestamp(row.update_time)
            )
        )

    # -- invoices ---------------------------------------------------------------------------------
    async def _invoice(self, invoice_id: uuid.UUID, *, session=None, lock: bool = False):
        query = select(store.invoices).where(store.invoices.c.id == invoice_id)
        if session is not None:
            row = (await session.execute(query.with_for_update() if lock else query)).first()
        else:
            async with self.db.engine.connect() as conn:
                row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"invoice {invoice_id} not found")
        return row

    async def GetInvoice(self, request, context):
        me = auth.caller()
        invoice_id = parse_uuid(request.invoice_id, "invoice_id")
        row = await self._invoice(invoice_id)
        domain.may_read(me, str(row.patient_id), "invoice", str(invoice_id))
        return pb.GetInvoiceResponse(invoice=invoice_message(row))

    async def ListInvoices(self, request, context):
        me = auth.caller()
        patient_id = str(parse_uuid(request.patient_id, "patient_id")) if request.patient_id else ""
        patient_id = domain.list_scope(me, patient_id)
        status = parse_enum(resources_pb2.InvoiceStatus, request.status, "status") if request.status else None
        appointment_id = (
            parse_uuid(request.appointment_id, "appointment_id") if request.appointment_id else None
        )
        filters = {"status": status, "patient_id": patient_id or None, "appointment_id": appointment_id}
        rows, token = await self._newest_first(store.invoices, request, filters)
        async with self.db.engine.connect() as conn:
            conditions = (store.invoices.c[k] == v for k, v in filters.items() if v)
            total = await conn.scalar(select(func.count()).select_from(store.invoices).where(*conditions))
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
        async with self.db.transaction() as session:
            row = await self._invoice(invoice_id, session=session, lock=True)
            lines = [
                Line(
                    line.description.strip(),
                    line.visit_type.strip(),
                    from_proto(line.amount, f"invoice.lines[{i}].amount"),
                )
                for i, line in enumerate(request.invoice.lines)
            ]
            new_total = domain.check_lines(lines, row.currency)
            _, insurance, paid = amounts(row)
            # A payment still waiting for the provider counts as paid: it may yet succeed.
            pending = await self._pending_payments(session, invoice_id)
            domain.check_adjustable(row.status, new_total, insurance, paid + Amount(pending, row.currency))
            await session.execute(
                insert(store.adjustments).values(
                    id=uuid.uuid4(),
                    invoice_id=invoice_id,
                    adjusted_by=uuid.UUID(me.user_id),
                    reason=reason,
                    before_lines=row.lines,
                    after_lines=[line.to_json() for line in lines],
                    before_total_minor=row.total_minor,
                    after_total_minor=new_total.minor,
                )
            )
            row = await self.billing.refresh(
                session, row, lines=[line.to_json() for line in lines], total_minor=new_total.minor
            )
        return pb.UpdateInvoiceResponse(invoice=invoice_message(row))

    async def ListInvoiceAdjustments(self, request, context):
        me = auth.caller()
        invoice_id = parse_uuid(request.invoice_id, "invoice_id")
        invoice = await self._invoice(invoice_id)
        domain.may_read(me, str(invoice.patient_id), "invoice", str(invoice_id))
        rows, token = await self._newest_first(store.adjustments, request, {"invoice_id": invoice_id})
        currency = invoice.currency
        return pb.ListInvoiceAdjustmentsResponse(
            adjustments=[
                resources_pb2.InvoiceAdjustment(
                    id=str(r.id),
                    invoice_id=str(r.invoice_id),
                    adjusted_by=str(r.adjusted_by),
                    reason=r.reason,
                    before_lines=[line_message(Line.from_json(x, currency)) for x in r.before_lines],
                    after_lines=[line_message(Line.from_json(x, currency)) for x in r.after_lines],
                    before_total=Amount(r.before_total_minor, currency).to_proto(),
                    after_total=Amount(r.after_total_minor, currency).to_proto(),
                    create_time=timestamp(r.create_time),
                )
                for r in rows
            ],
            next_page_token=token,
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
        fingerprint = _fingerprint(invoice_id, amount, method, wanted.provider_token)
        async with self.db.transaction() as session:
            # The invoice's lock orders its payments, so two tries of one request cannot both start.
            invoice = await self._invoice(invoice_id, session=session, lock=True)
            existing = (
                await session.execute(select(store.payments).where(store.payments.c.request_id == request_id))
            ).first()
            if existing is None:
                if me.role is not Role.ADMIN and me.role is not Role.RECEPTIONIST:
                    domain.may_read(me, str(invoice.patient_id), "invoice", str(invoice_id))
                total, insurance, paid = amounts(invoice)
                reserved = await self._pending_payments(session, invoice_id)
                available = domain.balance_due(total, insurance, paid) - Amount(reserved, invoice.currency)
                domain.check_payable(invoice.status, amount, available)
                existing = (
                    await session.execute(
                        upsert(store.payments)
                        .values(
                            id=uuid.uuid4(),
                            invoice_id=invoice_id,
                            patient_id=invoice.patient_id,
                            amount_minor=amount.minor,
                            currency=amount.currency,
                            method=method,
                            provider_token=wanted.provider_token,
                            status="PENDING",
                            request_id=request_id,
                            request_fingerprint=fingerprint,
                        )
                        .on_conflict_do_nothing(index_elements=["request_id"])
                        .returning(store.payments)
                    )
                ).first()
                if existing is None:  # the same request_id for another invoice, at this very moment
                    raise Aborted("request_id is being used by another payment right now; retry")
            elif existing.request_fingerprint != fingerprint:
                raise InvalidArgument("request_id", "was already used for a different payment")
        if me.role is Role.PATIENT and str(existing.patient_id) != me.user_id:
            raise NotFound(f"invoice {invoice_id} not found")
        if existing.status != "PENDING":  # a retry of a settled payment: the same answer
            return pb.CreatePaymentResponse(payment=payment_message(existing))
        try:
            settled = await self.billing.settle_payment(existing)
        except ProviderUnavailable:
            raise Unavailable(
                "the payment provider did not answer; the payment is PENDING and was charged at most once: "
                "retry with the same request_id"
            ) from None
        return pb.CreatePaymentResponse(payment=payment_message(settled))

    async def GetPayment(self, request, context):
        me = auth.caller()
        payment_id = parse_uuid(request.payment_id, "payment_id")
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(select(store.payments).where(store.payments.c.id == payment_id))
            ).first()
        if row is None:
            raise NotFound(f"payment {payment_id} not found")
        domain.may_read(me, str(row.patient_id), "payment", str(payment_id))
        return pb.GetPaymentResponse(payment=payment_message(row))

    async def ListPayments(self, request, context):
        me = auth.caller()
        patient_id = str(parse_uuid(request.patient_id, "patient_id")) if request.patient_id else ""
        patient_id = domain.list_scope(me, patient_id)
        invoice_id = parse_uuid(request.invoice_id, "invoice_id") if request.invoice_id else None
        rows, token = await self._newest_first(
            store.payments,
            request,
            {"patient_id": patient_id or None, "invoice_id": invoice_id},
        )
        return pb.ListPaymentsResponse(payments=[payment_message(r) for r in rows], next_page_token=token)

    async def _pending_payments(self, session, invoice_id: uuid.UUID) -> int:
        """Minor units of the invoice's payments still waiting for the provider's answer."""
        payments = store.payments.c
        return await session.scalar(
            select(func.coalesce(func.sum(payments.amount_minor), 0)).where(
                payments.invoice_id == invoice_id, payments.status == "PENDING"
            )
        )

    async def _newest_first(self, table, request, filters: dict):
        page = page_request(
            request.page_size, request.page_token, {k: str(v) for k, v in filters.items()}, maximum=500
        )
        query = newest_first(table, page, *(table.c[k] == v for k, v in filters.items() if v))
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return page.take(rows, newest_first_key)

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
        async with self.db.transaction() as session:
            # The payment's lock orders its refunds, so two tries of one request cannot both start.
            payment = (
                await session.execute(
                    select(store.payments).where(store.payments.c.id == payment_id).with_for_update()
                )
            ).first()
            if payment is None:
                raise NotFound(f"payment {payment_id} not found")
            existing = (
                await session.execute(select(store.refunds).where(store.refunds.c.request_id == request_id))
            ).first()
            if existing is None:
                left = Amount(payment.amount_minor - payment.refunded_minor, payment.currency)
                pending = await session.scalar(
                    select(func.coalesce(func.sum(store.refunds.c.amount_minor), 0)).where(
                        store.refunds.c.payment_id == payment_id, store.refunds.c.status == "PENDING"
                    )
                )
                refundable = left - Amount(pending, payment.currency)
                amount = (
                    from_proto(wanted.amount, "refund.amount", allow_zero=False) if has_amount else refundable
                )
                domain.check_refundable(payment.status, amount, refundable)
                if amount.minor <= 0:
                    raise FailedPrecondition("nothing is left to refund on this payment")
                fingerprint = _fingerprint(payment_id, amount, reason)
                existing = (
                    await session.execute(
                        upsert(store.refunds)
                        .values(
                            id=uuid.uuid4(),
                            payment_id=payment_id,
                            invoice_id=payment.invoice_id,
                            patient_id=payment.patient_id,
                            amount_minor=amount.minor,
                            currency=amount.currency,
                            reason=reason,
                            status="PENDING",
                            refunded_by=uuid.UUID(me.user_id),
                            request_id=request_id,
                            request_fingerprint=fingerprint,
                        )
                        .on_conflict_do_nothing(index_elements=["request_id"])
                        .returning(store.refunds)
                    )
                ).first()
                if existing is None:  # the same request_id for another payment, at this very moment
                    raise Aborted("request_id is being used by another refund right now; retry")
            elif (
                existing.payment_id != payment_id
                or existing.reason != reason
                or (has_amount and from_proto(wanted.amount, "refund.amount").minor != existing.amount_minor)
            ):
                raise InvalidArgument("request_id", "was already used for a different refund")
        if existing.status != "PENDING":
            return pb.CreateRefundResponse(refund=refund_message(existing))
        try:
            settled = await self.billing.settle_refund(existing)
        except ProviderUnavailable:
            raise Unavailable(
                "the payment provider did not answer; the refund is PENDING and was made at most once: "
                "retry with the same request_id"
            ) from None
        return pb.CreateRefundResponse(refund=refund_message(settled))

    async def ListRefunds(self, request, context):
        me = auth.caller()
        payment_id = parse_uuid(request.payment_id, "payment_id") if request.payment_id else None
        invoice_id = parse_uuid(request.invoice_id, "invoice_id") if request.invoice_id else None
        patient_id = domain.list_scope(me, "")
        rows, token = await self._newest_first(
            store.refunds,
            request,
            {"patient_id": patient_id or None, "payment_id": payment_id, "invoice_id": invoice_id},
        )
        return pb.ListRefundsResponse(refunds=[refund_message(r) for r in rows], next_page_token=token)
