"""Money, exactly: integer minor units (cents) and an ISO 4217 currency, never floats.

`google.type.Money` on the wire (units + nanos) converts to and from `Amount` without rounding;
an amount finer than its currency's minor unit, or a malformed currency, is INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from google.type import money_pb2

from clinic_platform.errors import InvalidArgument

# Minor-unit exponents that are not 2 (ISO 4217).
_EXPONENTS = {
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "CLP": 0,
    "VND": 0,
    "BHD": 3,
    "JOD": 3,
    "KWD": 3,
    "OMR": 3,
    "TND": 3,
}
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


@dataclass(frozen=True, order=True)
class Amount:
    minor: int  # in the currency's minor unit (cents for EUR)
    currency: str

    def __add__(self, other: Amount) -> Amount:
        self._same(other)
        return Amount(self.minor + other.minor, self.currency)

    def __sub__(self, other: Amount) -> Amount:
        self._same(other)
        return Amount(self.minor - other.minor, self.currency)

    def _same(self, other: Amount) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot mix {self.currency} and {other.currency}")

    def to_proto(self) -> money_pb2.Money:
        value = Decimal(self.minor).scaleb(-exponent(self.currency))
        units = int(value)  # truncates toward zero, as Money wants units and nanos of one sign
        nanos = int((value - units) * 1_000_000_000)
        return money_pb2.Money(currency_code=self.currency, units=units, nanos=nanos)

    def __str__(self) -> str:
        return f"{Decimal(self.minor).scaleb(-exponent(self.currency))} {self.currency}"


def zero(currency: str) -> Amount:
    return Amount(0, currency)


def from_proto(
    money: money_pb2.Money, field: str, *, allow_zero: bool = True, allow_negative: bool = False
) -> Amount:
    currency = money.currency_code
    if not _CURRENCY.match(currency):
        raise InvalidArgument(f"{field}.currency_code", f"{currency!r} is not an ISO 4217 currency code")
    if (money.units > 0 and money.nanos < 0) or (money.units < 0 and money.nanos > 0):
        raise InvalidArgument(f"{field}.nanos", "must have the same sign as units")
    value = Decimal(money.units) + Decimal(money.nanos).scaleb(-9)
    minor = value.scaleb(exponent(currency))
    if minor != minor.to_integral_value():
        raise InvalidArgument(field, f"{value} {currency} is finer than the currency's smallest unit")
    amount = Amount(int(minor), currency)
    if amount.minor < 0 and not allow_negative:
        raise InvalidArgument(field, "must not be negative")
    if amount.minor == 0 and not allow_zero:
        raise InvalidArgument(field, "must be more than zero")
    return amount
