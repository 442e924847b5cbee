"""The tables of the medical records database, declared so the schema is checked against
`migrations/versions/0001_records.py` (which creates them in SQL); the queries stay plain SQL.

Content columns (bytea here, LargeBinary) hold ciphertext. The migration's unique, foreign key
and check constraints carry PostgreSQL's default names, so they are named here as they are there
(`conv`: as is, not by the kit's naming convention). The access log's triggers and revoked
privileges, and the head row it starts with, are the migration's alone.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    literal_column,
    text,
)
from sqlalchemy.schema import conv

from clinic_platform.db import new_metadata

metadata = new_metadata()  # the kit's tables, and ours below


def _time(name: str, **kwargs) -> Column:
    return Column(name, DateTime(timezone=True), **kwargs)


def _created() -> Column:
    return _time("create_time", nullable=False, server_default=func.now())


def _updated() -> Column:
    return _time("update_time", nullable=False, server_default=func.now())


def _desc(column: str):
    """An index column in descending order (the chart's pages and the log read newest first)."""
    return literal_column(column).desc()


def _encounter_id(table: str) -> Column:
    """A chart entry's optional encounter."""
    return Column("encounter_id", Uuid, ForeignKey("encounters.id", name=conv(f"{table}_encounter_id_fkey")))


# -- projections of other services' events ------------------------------------------------------
users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("role", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("user_version", BigInteger, nullable=False),
)

care_appointments = Table(
    "care_appointments",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("patient_id", Uuid, nullable=False),
    Column("doctor_id", Uuid, nullable=False),
    _time("start_time", nullable=False),
    _time("end_time", nullable=False),
    Column("status", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Index("ix_care_appointments_patient", "patient_id", "doctor_id", "end_time"),
    Index("ix_care_appointments_patient_start", "patient_id", "start_time"),
)

# -- chart content --------------------------------------------------------------------------------
data_keys = Table(
    "data_keys",
    metadata,
    Column("patient_id", Uuid, primary_key=True),
    Column("kek_id", Text, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    _created(),
    _time("rewrap_time"),
    Index("ix_data_keys_kek_id", "kek_id"),
)

chart_versions = Table(
    "chart_versions",
    metadata,
    Column("patient_id", Uuid, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("running_notes", LargeBinary, nullable=False),
    Column("allergies", LargeBinary, nullable=False),
    Column("author_id", Uuid, nullable=False),
    _created(),
)

encounters = Table(
    "encounters",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("patient_id", Uuid, nullable=False),
    Column("clinician_id", Uuid, nullable=False),
    Column("appointment_id", Uuid),
    _time("encounter_time", nullable=False),
    Column("chief_complaint", LargeBinary, nullable=False),
    _created(),
    Index("ix_encounters_patient", "patient_id", _desc("create_time"), _desc("id")),
)


notes = Table(
    "notes",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("patient_id", Uuid, nullable=False),
    _encounter_id("notes"),
    Column("author_id", Uuid, nullable=False),
    Column("revision", Integer, nullable=False),
    _created(),
    _updated(),
    Index("ix_notes_patient", "patient_id", _desc("create_time"), _desc("id")),
)

note_revisions = Table(
    "note_revisions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "note_id",
        Uuid,
        ForeignKey("notes.id", name=conv("note_revisions_note_id_fkey")),
        nullable=False,
    ),
    Column("patient_id", Uuid, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("author_id", Uuid, nullable=False),
    Column("subjective", LargeBinary, nullable=False),
    Column("objective", LargeBinary, nullable=False),
    Column("assessment", LargeBinary, nullable=False),
    Column("plan", LargeBinary, nullable=False),
    _created(),
    UniqueConstraint("note_id", "revision", name=conv("note_revisions_note_id_revision_key")),
)

diagnoses = Table(
    "diagnoses",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("patient_id", Uuid, nullable=False),
    _encounter_id("diagnoses"),
    Column("code", LargeBinary, nullable=False),
    Column("description", LargeBinary, nullable=False),
    Column("status", Text, nullable=False),
    Column("diagnosed_by", Uuid, nullable=False),
    _created(),
    _updated(),
    Index("ix_diagnoses_patient", "patient_id", _desc("create_time"), _desc("id")),
)

prescriptions = Table(
    "prescriptions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("patient_id", Uuid, nullable=False),
    _encounter_id("prescriptions"),
    Column("prescriber_id", Uuid, nullable=False),
    Column("drug", LargeBinary, nullable=False),
    Column("strength", LargeBinary, nullable=False),
    Column("dose", LargeBinary, nullable=False),
    Column("route", LargeBinary, nullable=False),
    Column("frequency", LargeBinary, nullable=False),
    Column("duration_days", Integer, nullable=False),
    Column("status", Text, nullable=False),
    _created(),
    _updated(),
    Index("ix_prescriptions_patient", "patient_id", _desc("create_time"), _desc("id")),
)

vital_signs = Table(
    "vital_signs",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("patient_id", Uuid, nullable=False),
    _encounter_id("vital_signs"),
    Column("recorded_by", Uuid, nullable=False),
    _time("measure_time", nullable=False),
    Column("measurements", LargeBinary, nullable=False),
    _created(),
    Index("ix_vital_signs_patient", "patient_id", _desc("create_time"), _desc("id")),
)

# -- access requests and grants -------------------------------------------------------------------
access_requests = Table(
    "access_requests",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("patient_id", Uuid, nullable=False),
    Column("requester_id", Uuid, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("access_grant_id", Uuid),
    _created(),
    _time("decide_time"),
    Index("ix_access_requests_patient", "patient_id", _desc("create_time"), _desc("id")),
    Index(
        "ux_access_requests_pending",
        "patient_id",
        "requester_id",
        unique=True,
        postgresql_where=text("status = 'PENDING'"),
    ),
)

access_grants = Table(
    "access_grants",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("patient_id", Uuid, nullable=False),
    Column("grantee_id", Uuid, nullable=False),
    Column("kind", Text, nullable=False),
    Column("access_request_id", Uuid),
    Column("justification", Text, nullable=False, server_default=""),
    _time("expire_time"),
    _time("revoke_time"),
    Column("revoked_by", Uuid),
    _created(),
    Index("ix_access_grants_patient", "patient_id", "grantee_id"),
    Index("ix_access_grants_patient_time", "patient_id", _desc("create_time"), _desc("id")),
)

# -- the access log (append-only, hash-chained; its head row is locked by every append) ---------
access_log = Table(
    "access_log",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("id", Uuid, nullable=False),
    Column("patient_id", Uuid),
    Column("actor_id", Uuid, nullable=False),
    Column("actor_role", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("basis", Text, nullable=False),
    Column("access_grant_id", Uuid),
    Column("method", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("emergency", Boolean, nullable=False),
    _time("create_time", nullable=False),
    Column("previous_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    UniqueConstraint("id", name=conv("access_log_id_key")),
    Index("ix_access_log_patient", "patient_id", _desc("sequence")),
    Index("ix_access_log_actor", "actor_id", _desc("sequence")),
)

access_log_head = Table(
    "access_log_head",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("sequence", BigInteger, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    CheckConstraint("id = 1", name=conv("access_log_head_id_check")),
)
