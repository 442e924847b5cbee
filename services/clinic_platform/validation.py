"""Request validation, run by the server interceptor before any handler: nothing reaches a handler,
and so the database, unvalidated, whether it came through the edge or straight over gRPC.

Two layers, both declared once:
- the `buf.validate` rules written on the contracts' fields (lengths, UUIDs, page sizes, list
  sizes), checked by protovalidate;
- invariants of the types themselves, true of every field of that type, so no field can forget
  them: a string never holds NUL (PostgreSQL text cannot store it) nor more than 64 Ki
  characters (the backstop for fields without a tighter rule of their own), an enum holds one of its
  declared values (proto3 lets any number through), a Timestamp is normalised and within the
  years the clinic deals with, a Money is normalised (nanos within ±999,999,999, sharing the
  sign of units).

Violations name the field by its proto path (`user.role`, `working_hours[2].start_time`) and never
echo the value (it may be personal data, or a megabyte).
"""

from __future__ import annotations

from datetime import UTC, datetime

import protovalidate
from google.protobuf import descriptor
from google.protobuf.message import Message

from clinic_platform.errors import FieldViolation

# Instants the clinic handles: well inside what datetime and PostgreSQL represent, with room for
# any time-zone arithmetic (year 9999 + 1 hour is an overflow, not a date).
# Calendar dates too (clinic_platform.convert), whether a google.type.Date or a query's string.
FIRST_YEAR, LAST_YEAR = 1900, 2199
EARLIEST = int(datetime(FIRST_YEAR, 1, 1, tzinfo=UTC).timestamp())
LATEST = int(datetime(LAST_YEAR + 1, 1, 1, tzinfo=UTC).timestamp())
MAX_NANOS = 999_999_999
MAX_STRING_CHARS = 65_536

_STRING = descriptor.FieldDescriptor.TYPE_STRING
_ENUM = descriptor.FieldDescriptor.TYPE_ENUM
_MESSAGE = descriptor.FieldDescriptor.TYPE_MESSAGE


def violations(message: Message) -> list[FieldViolation]:
    found = [
        FieldViolation(_path(v.proto.field), v.proto.message or v.proto.rule_id)
        for v in protovalidate.collect_violations(message)
    ]
    _check_types(message, "", found)
    return found


def _path(field_path) -> str:
    parts = []
    for element in field_path.elements:
        part = element.field_name
        subscript = element.subscript
        if subscript is not None:
            part += f"[{subscript.value!r}]" if isinstance(subscript.value, str) else f"[{subscript.value}]"
        parts.append(part)
    return ".".join(parts)


def _check_types(message: Message, prefix: str, found: list[FieldViolation]) -> None:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        _check_timestamp(message, prefix.rstrip("."), found)
        return
    if name == "google.type.Money":
        _check_money(message, prefix.rstrip("."), found)
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                _check_value(value_field, item, f"{path}[{key!r}]", found)
                if isinstance(key, str) and "\x00" in key:
                    found.append(FieldViolation(path, "a key contains a NUL character"))
        elif field.is_repeated:
            for index, item in enumerate(value):
                _check_value(field, item, f"{path}[{index}]", found)
        else:
            _check_value(field, value, path, found)


def _check_value(field, value, path: str, found: list[FieldViolation]) -> None:
    if field.type == _STRING:
        if "\x00" in value:
            found.append(FieldViolation(path, "must not contain a NUL character"))
        if len(value) > MAX_STRING_CHARS:
            found.append(FieldViolation(path, f"must be at most {MAX_STRING_CHARS} characters"))
    elif field.type == _ENUM:
        if field.enum_type.values_by_number.get(value) is None:
            found.append(FieldViolation(path, f"{value} is not a value of {field.enum_type.name}"))
    elif field.type == _MESSAGE:
        _check_types(value, path + ".", found)


def _check_timestamp(value: Message, path: str, found: list[FieldViolation]) -> None:
    if not 0 <= value.nanos <= MAX_NANOS:
        found.append(FieldViolation(path, "nanos must be from 0 to 999999999"))
    elif not EARLIEST <= value.seconds < LATEST:
        found.append(FieldViolation(path, "must be from 1900-01-01 to before 2200-01-01"))


def _check_money(value: Message, path: str, found: list[FieldViolation]) -> None:
    if not -MAX_NANOS <= value.nanos <= MAX_NANOS:
        found.append(FieldViolation(f"{path}.nanos", "must be from -999999999 to 999999999"))
    elif (value.units > 0 and value.nanos < 0) or (value.units < 0 and value.nanos > 0):
        found.append(FieldViolation(f"{path}.nanos", "must have the sign of units"))


def bad_utf8_field(message_type: descriptor.Descriptor, data: bytes, prefix: str = "") -> str | None:
    """The path of the first string field in the wire bytes of `message_type` that is not valid
    UTF-8 (what makes protobuf refuse to parse a request), so the answer can name it."""
    position = 0
    try:
        while position < len(data):
            tag, position = _varint(data, position)
            number, wire_type = tag >> 3, tag & 7
            if wire_type == 0:
                _, position = _varint(data, position)
            elif wire_type == 1:
                position += 8
            elif wire_type == 5:
                position += 4
            elif wire_type == 2:
                length, position = _varint(data, position)
                chunk = data[position : position + length]
                position += length
                field = message_type.fields_by_number.get(number)
                if field is None:
                    continue
                if field.type == _STRING:
                    try:
                        chunk.decode("utf-8")
                    except UnicodeDecodeError:
                        return prefix + field.name
                elif field.type == _MESSAGE:
                    found = bad_utf8_field(field.message_type, chunk, f"{prefix}{field.name}.")
                    if found:
                        return found
            else:
                return None  # groups or garbage: no field to name
    except IndexError:
        return None
    return None


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
