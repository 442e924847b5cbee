"""Rules of billing: an invoice's status follows its appointment and its money; who may see, pay,
adjust and refund. No gRPC and no SQL here.

balance due = total - insurance - paid. A refund does not reopen an invoice (the money went back
because the patient had paid more than they owed, e.g. after an adjustment or a cancellation)."""

from __future__ import annotations

from dataclasses import dataclass

from clinic_platform.auth import Caller, Role
from clinic_platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from clinic_platform.money import Amount

PENDING, DUE, PAID, VOIDED = "PENDING", "DUE", "PAID", "VOIDED"
# A payment or refund waits for the provider's answer (PENDING) until it SUCCEEDED or FAILED.
SUCCEEDED, FAILED = "SUCCEEDED", "FAILED"
# What the appointment's events said last.
BOOKED, COMPLETED, NO_SHOW, CANCELLED = "BOOKED", "COMPLETED", "NO_SHOW", "CANCELLED"
MAX_LINES = 50


@dataclass(frozen=True)
class Line:
    description: str
    visit_type: str
    amount: Amount

    def to_json(self) -> dict:
        return {
            "description": self.description,
            "visit_type": self.visit_type,
            "amount_minor": self.amount.minor,
        }

    @classmethod
    def from_json(cls, data: dict, currency: str) -> Line:
        return cls(data["description"], data.get("visit_type", ""), Amount(data["amount_minor"], currency))


def balance_due(total: Amount, insurance: Amount, paid: Amount) -> Amount:
    return total - insurance - paid


def amounts(invoice) -> tuple[Amount, Amount, Amount]:
    """An invoice's total, insurance share and paid amount."""
    return (
        Amount(invoice.total_minor, invoice.currency),
        Amount(invoice.insurance_minor, invoice.currency),
        Amount(invoice.paid_minor, invoice.currency),
    )


def found(row, what: str, resource_id: object):
    """`row`, or NOT_FOUND for the caller when there is none."""
    if row is None:
        raise NotFound(f"{what} {resource_id} not found")
    return row


def invoice_status(appointment_state: str, total: Amount, insurance: Amount, paid: Amount) -> str:
    """The status an invoice should have now.

    The appointment decides until the money does: a cancelled visit voids the invoice; a
    positive total that is covered is PAID, and so is a visit that took place with nothing left
    to pay (a free visit type); a visit that took place (or was missed: the booked time stays
    billable, an admin can adjust) is DUE; otherwise the invoice is PENDING."""
    if appointment_state == CANCELLED:
        return VOIDED
    took_place = appointment_state in (COMPLETED, NO_SHOW)
    if balance_due(total, insurance, paid).minor <= 0 and (total.minor > 0 or took_place):
        return PAID
    if appointment_state in (COMPLETED, NO_SHOW):
        return DUE
    return PENDING


def check_lines(lines: list[Line], currency: str) -> Amount:
    """Validate an invoice's new lines; returns their total."""
    if not lines:
        raise InvalidArgument("invoice.lines", "an invoice needs at least one line")
    if len(lines) > MAX_LINES:
        raise InvalidArgument("invoice.lines", f"at most {MAX_LINES} lines")
    total = Amount(0, currency)
    for index, line in enumerate(lines):
        field = f"invoice.lines[{index}]"
        if not line.description.strip():
            raise InvalidArgument(f"{field}.description", "is required")
        if line.amount.currency != currency:
            raise InvalidArgument(f"{field}.amount", f"must be in the invoice's currency, {currency}")
        if line.amount.minor < 0:
            raise InvalidArgument(f"{field}.amount", "must not be negative")
        total += line.amount
    return total


def check_adjustable(invoice, new_total: Amount, pending_minor: int) -> None:
    """New lines may not bring the total below what was paid, counting payments still waiting for
    the provider as paid: they may yet succeed."""
    if invoice.status in (PAID, VOIDED):
        raise FailedPrecondition(
            f"the invoice is {invoice.status}: a paid or voided invoice cannot be adjusted"
        )
    _, insurance, paid = amounts(invoice)
    covered = insurance + paid + Amount(pending_minor, invoice.currency)
    if new_total < covered:
        raise FailedPrecondition(
            f"the new total {new_total} is below what was already paid or is being paid ({covered})"
        )


def check_payable(invoice, amount: Amount, pending_minor: int) -> None:
    """A new payment may cover what is due, less what payments still waiting for the provider
    may yet pay."""
    if invoice.status in (PAID, VOIDED):
        raise FailedPrecondition(f"the invoice is {invoice.status}: nothing is left to pay")
    available = balance_due(*amounts(invoice)) - Amount(pending_minor, invoice.currency)
    if amount.currency != available.currency:
        raise InvalidArgument("payment.amount", f"must be in the invoice's currency, {available.currency}")
    if amount > available:
        raise FailedPrecondition(f"the amount {amount} is more than the balance due ({available})")


def refund_amount(payment, requested: Amount | None, pending_minor: int) -> Amount:
    """What a new refund of `payment` gives back: `requested`, or all that is left when None.
    Refunds still waiting for the provider count as given back."""
    left = Amount(payment.amount_minor - payment.refunded_minor - pending_minor, payment.currency)
    amount = left if requested is None else requested
    check_refundable(payment.status, amount, left)
    if amount.minor <= 0:
        raise FailedPrecondition("nothing is left to refund on this payment")
    return amount


def check_refundable(payment_status: str, amount: Amount, refundable: Amount) -> None:
    if payment_status != SUCCEEDED:
        raise FailedPrecondition(f"the payment is {payment_status}: only a succeeded payment can be refunded")
    if amount.currency != refundable.currency:
        raise InvalidArgument("refund.amount", f"must be in the payment's currency, {refundable.currency}")
    if amount > refundable:
        raise FailedPrecondition(f"the amount {amount} is more than what is left to refund ({refundable})")


# -- who may do what ------------------------------------------------------------------------------
BILLING_STAFF = (Role.RECEPTIONIST, Role.ADMIN)


def may_read(caller: Caller, patient_id: str, what: str, resource_id: str) -> None:
    if caller.role in BILLING_STAFF:
        return
    if caller.role is Role.PATIENT:
        if caller.user_id != patient_id:
            raise NotFound(f"{what} {resource_id} not found")
        return
    raise PermissionDenied("billing is for patients, the front desk and admins")


def list_scope(caller: Caller, patient_id: str) -> str:
    """The patient filter a caller may use: a patient only their own."""
    if caller.role in BILLING_STAFF:
        return patient_id
    if caller.role is Role.PATIENT:
        if patient_id and patient_id != caller.user_id:
            raise PermissionDenied("a patient may only list their own billing")
        return caller.user_id
    raise PermissionDenied("billing is for patients, the front desk and admins")
