"""The tables of the appointments database.

`calendar_entries` holds appointments AND time off, so that one exclusion constraint keeps a
doctor's confirmed visits and time off from overlapping, whichever comes first and however
concurrent: a booking during time off and time off over a booking both fail in the database.
A second constraint keeps one patient from holding two overlapping appointments.
"""

from __future__ import annotations

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
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, ExcludeConstraint

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
