"""Proto <-> Python conversions every API layer needs, each failing with INVALID_ARGUMENT naming
the field: UUIDs, timestamps, dates, enum names (with or without their prefix) and update masks."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2

from clinic_platform.errors import InvalidArgument
from clinic_platform.validation import FIRST_YEAR, LAST_YEAR


def parse_uuid(value: str, field: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument(field, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, f"{value!r} is not a valid id") from None


def timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def from_timestamp(stamp: Timestamp, field: str, *, required: bool = True) -> datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        if required:
            raise InvalidArgument(field, "is required")
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def to_date(day: date | None) -> date_pb2.Date | None:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day) if day else None


def from_date(value: date_pb2.Date, field: str, *, required: bool = True) -> date | None:
    if value.year == 0 and value.month == 0 and value.day == 0:
        if required:
            raise InvalidArgument(field, "is required")
        return None
    try:
        day = date(value.year, value.month, value.day)
    except ValueError:
        raise InvalidArgument(
            field, f"{value.year}-{value.month}-{value.day} is not a calendar date"
        ) from None
    return _in_range(day, field)


def parse_day(value: str, field: str) -> date:
    """A 'YYYY-MM-DD' query parameter."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(field, f"{value[:40]!r} is not a date (YYYY-MM-DD)") from None
    return _in_range(day, field)


def _in_range(day: date, field: str) -> date:
    # Days are turned into instants in the clinic's zone and a day past them: 9999-12-31 overflows.
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise InvalidArgument(field, f"must be from {FIRST_YEAR}-01-01 to {LAST_YEAR}-12-31")
    return day


def _enum_prefix(enum_type) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum_type.DESCRIPTOR.name).upper() + "_"


def enum_name(enum_type, value: int) -> str:
    """The value's name without its prefix: Role.ROLE_PATIENT -> 'PATIENT'."""
    return enum_type.Name(value).removeprefix(_enum_prefix(enum_type))


def enum_value(enum_type, name: str) -> int:
    """The value for 'PATIENT' or 'ROLE_PATIENT' (any case)."""
    full = name.strip().upper()
    if not full.startswith(_enum_prefix(enum_type)):
        full = _enum_prefix(enum_type) + full
    return enum_type.Value(full)


def parse_enum(enum_type, name: str, field: str, *, allowed: set[str] | None = None) -> str:
    """A string filter naming an enum value -> its short name; INVALID_ARGUMENT when unknown."""
    try:
        short = enum_name(enum_type, enum_value(enum_type, name))
    except ValueError:
        short = ""
    choices = allowed or {enum_name(enum_type, v) for v in enum_type.values()} - {"UNSPECIFIED"}
    if short not in choices:
        raise InvalidArgument(field, f"{name!r} is not one of {', '.join(sorted(choices))}")
    return short


def mask_paths(mask: FieldMask, allowed: set[str], field: str = "update_mask") -> set[str]:
    paths = set(mask.paths)
    if not paths:
        raise InvalidArgument(field, "is required: name the fields to change")
    unknown = paths - allowed
    if unknown:
        raise InvalidArgument(field, f"cannot change {', '.join(sorted(unknown))}")
    return paths
