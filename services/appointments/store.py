"""Tables of the appointments database and its queries.

`calendar_entries` holds appointments AND time off, so that one exclusion constraint keeps a
doctor's confirmed visits and time off from overlapping, whichever comes first and however
concurrent: a booking during time off and time off over a booking both fail in the database.
A second constraint keeps one patient from holding two overlapping appointments.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Table,
    Text,
    Uuid,
    and_,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, ExcludeConstraint
from sqlalchemy.ext.asyncio import AsyncConnection

from clinic_platform.db import new_metadata

metadata = new_metadata()

APPOINTMENT, TIME_OFF = "APPOINTMENT", "TIME_OFF"
BLOCKING = "BLOCKING"  # the status of time off: it always blocks the doctor's calendar
DOCTOR_BUSY = ("CONFIRMED", "COMPLETED", BLOCKING)
PATIENT_BUSY = ("CONFIRMED", "COMPLETED")
DOCTOR_OVERLAP = "ex_calendar_doctor_overlap"
PATIENT_OVERLAP = "ex_calendar_patient_overlap"

doctors = Table(
    "doctors",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("specialty", Text, nullable=False),
    Column("active", Boolean, nullable=False),  # projection of the user's status
    Column("user_version", Integer, nullable=False),  # the newest user event applied
    Index("ix_doctors_specialty", func.lower(literal_column("specialty"))),
)

patients = Table(
    "patients",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("active", Boolean, nullable=False),
    Column("user_version", Integer, nullable=False),
)

schedules = Table(
    "schedules",
    metadata,
    Column("doctor_id", Uuid, primary_key=True),
    Column("slot_minutes", Integer, nullable=False),
    Column("working_hours", JSONB, nullable=False),  # [{"weekday": 1, "start": "09:00", "end": "12:00"}]
    Column(
        "visit_types", JSONB, nullable=False
    ),  # [{"code": "CONSULT", "name": ..., "duration_minutes": 30}]
    Column("version", Integer, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

calendar = Table(
    "calendar_entries",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("doctor_id", Uuid, nullable=False),
    Column("patient_id", Uuid),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("end_time", DateTime(timezone=True), nullable=False),
    Column("visit_type", Text),
    Column("status", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("cancel_reason", Text, nullable=False, server_default=""),
    Column("changed_by", Uuid),
    Column("version", Integer, nullable=False),
    Column("request_key", Text, unique=True),  # "<caller>:<request_id>" of a retryable create
    Column("request_fingerprint", Text),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("end_time > start_time", name="ends_after_start"),
    ExcludeConstraint(
        (literal_column("doctor_id"), "="),
        (func.tstzrange(literal_column("start_time"), literal_column("end_time"), "[)"), "&&"),
        name=DOCTOR_OVERLAP,
        using="gist",
        where=text("status IN ('CONFIRMED', 'COMPLETED', 'BLOCKING')"),
    ),
    ExcludeConstraint(
        (literal_column("patient_id"), "="),
        (func.tstzrange(literal_column("start_time"), literal_column("end_time"), "[)"), "&&"),
        name=PATIENT_OVERLAP,
        using="gist",
        where=text("kind = 'APPOINTMENT' AND status IN ('CONFIRMED', 'COMPLETED')"),
    ),
    Index("ix_calendar_doctor_start", "doctor_id", "start_time"),
    Index("ix_calendar_patient_start", "patient_id", "start_time"),
)

# The booking: the appointment and its AppointmentBooked event in ONE statement (one round trip,
# one implicit transaction), run on asyncpg directly. A retry (same request key) inserts nothing.
BOOK = """
    WITH booked AS (
        INSERT INTO calendar_entries
            (id, kind, doctor_id, patient_id, start_time, end_time, visit_type, status, reason,
             changed_by, version, request_key, request_fingerprint, create_time, update_time)
        VALUES ($1, 'APPOINTMENT', $2, $3, $4, $5, $6, 'CONFIRMED', $7, $8, 1, $9, $10, $11, $11)
        ON CONFLICT (request_key) DO NOTHING
        RETURNING id
    ), event AS (
        INSERT INTO outbox (event_id, topic, event_type, aggregate_id, payload, request_id)
        SELECT $12, $13, $14, $15, $16, $17 FROM booked
    )
    SELECT id FROM booked
"""


# Whether a doctor has a confirmed visit in a period: a booking refused by the doctor's exclusion
# constraint hit a visit ("already booked") or time off. On asyncpg: a storm of refusals runs it.
HAS_VISIT_BETWEEN = """
    SELECT EXISTS (SELECT 1 FROM calendar_entries WHERE doctor_id = $1 AND kind = 'APPOINTMENT'
                   AND status IN ('CONFIRMED', 'COMPLETED') AND start_time < $3 AND end_time > $2)
"""


async def busy_intervals(
    conn: AsyncConnection, doctor_ids: list[Any], start: datetime, end: datetime
) -> dict[Any, list[tuple[datetime, datetime]]]:
    rows = await conn.execute(
        select(calendar.c.doctor_id, calendar.c.start_time, calendar.c.end_time).where(
            calendar.c.doctor_id.in_(doctor_ids),
            calendar.c.status.in_(DOCTOR_BUSY),
            calendar.c.start_time < end,
            calendar.c.end_time > start,
        )
    )
    busy: dict[Any, list[tuple[datetime, datetime]]] = {d: [] for d in doctor_ids}
    for row in rows:
        busy[row.doctor_id].append((row.start_time, row.end_time))
    return busy


def appointments_query(
    *,
    doctor_id: Any,
    patient_id: Any,
    start: datetime | None,
    end: datetime | None,
    status: str | None,
    after: list[str] | None,
    limit: int,
):
    query = select(calendar).where(calendar.c.kind == APPOINTMENT)
    if doctor_id:
        query = query.where(calendar.c.doctor_id == doctor_id)
    if patient_id:
        query = query.where(calendar.c.patient_id == patient_id)
    if start:
        query = query.where(calendar.c.start_time >= start)
    if end:
        query = query.where(calendar.c.start_time < end)
    if status:
        query = query.where(calendar.c.status == status)
    if after:
        after_start, after_id = datetime.fromisoformat(after[0]), after[1]
        query = query.where(
            or_(
                calendar.c.start_time > after_start,
                and_(calendar.c.start_time == after_start, calendar.c.id > after_id),
            )
        )
    return query.order_by(calendar.c.start_time, calendar.c.id).limit(limit + 1)
