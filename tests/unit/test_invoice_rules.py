"""Invoice status from the appointment and the money."""

from __future__ import annotations

import pytest

from clinic_platform.money import Amount
from payment import domain


def eur(minor: int) -> Amount:
    return Amount(minor, "EUR")


@pytest.mark.parametrize(
    ("appointment", "total", "insurance", "paid", "status"),
    [
        (domain.BOOKED, 6000, 0, 0, domain.PENDING),
        (domain.BOOKED, 6000, 0, 6000, domain.PAID),  # paid ahead of the visit
        (domain.COMPLETED, 6000, 0, 0, domain.DUE),
        (domain.COMPLETED, 6000, 0, 2000, domain.DUE),  # partly paid
        (domain.COMPLETED, 6000, 4000, 2000, domain.PAID),  # insurance and patient together
        (domain.NO_SHOW, 6000, 0, 0, domain.DUE),  # a missed visit stays billable
        (domain.CANCELLED, 6000, 0, 6000, domain.VOIDED),
        (domain.BOOKED, 0, 0, 0, domain.PENDING),  # a free visit not yet held owes nothing yet
        (domain.COMPLETED, 0, 0, 0, domain.PAID),  # ... and once held, nothing is left to pay
    ],
)
def test_the_status_follows_the_visit_until_the_money_settles_it(appointment, total, insurance, paid, status):
    assert domain.invoice_status(appointment, eur(total), eur(insurance), eur(paid)) == status
