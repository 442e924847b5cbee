"""Rows of the payment database as the contract's resources (clinic.payment.v1)."""

from __future__ import annotations

from clinic.payment.v1 import resources_pb2
from clinic_platform.convert import enum_value, timestamp
from clinic_platform.money import Amount
from payment import domain
from payment.domain import Line


def invoice_status(status: str) -> int:
    return enum_value(resources_pb2.InvoiceStatus, status)


def fee_message(row) -> resources_pb2.Fee:
    return resources_pb2.Fee(
        visit_type=row.visit_type,
        price=Amount(row.amount_minor, row.currency).to_proto(),
        update_time=timestamp(row.update_time),
    )


def invoice_message(row) -> resources_pb2.Invoice:
    total, insurance, paid = domain.amounts(row)
    return resources_pb2.Invoice(
        id=str(row.id),
        patient_id=str(row.patient_id),
        appointment_id=str(row.appointment_id),
        status=invoice_status(row.status),
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


def adjustment_message(row, currency: str) -> resources_pb2.InvoiceAdjustment:
    return resources_pb2.InvoiceAdjustment(
        id=str(row.id),
        invoice_id=str(row.invoice_id),
        adjusted_by=str(row.adjusted_by),
        reason=row.reason,
        before_lines=[line_message(Line.from_json(x, currency)) for x in row.before_lines],
        after_lines=[line_message(Line.from_json(x, currency)) for x in row.after_lines],
        before_total=Amount(row.before_total_minor, currency).to_proto(),
        after_total=Amount(row.after_total_minor, currency).to_proto(),
        create_time=timestamp(row.create_time),
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
