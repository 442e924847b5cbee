"""Rules of the medical records service, in plain Python: who may see and change what on which
ground, the shape of chart entries, and the transitions of diagnoses, prescriptions, notes,
access requests and grants."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from clinic_platform.auth import Caller, Role
from clinic_platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied


class Section(StrEnum):
    """Parts of a chart, as access rules see them."""

    RUNNING_NOTES = "running_notes"
    ALLERGIES = "allergies"
    ENCOUNTERS = "encounters"
    NOTES = "notes"
    DIAGNOSES = "diagnoses"
    PRESCRIPTIONS = "prescriptions"
    VITAL_SIGNS = "vital_signs"


ALL_SECTIONS = frozenset(Section)
# A nurse reads what intake and medication rounds need, and records vitals.
NURSE_READS = frozenset({Section.ALLERGIES, Section.PRESCRIPTIONS, Section.VITAL_SIGNS})
NURSE_WRITES = frozenset({Section.VITAL_SIGNS})
CLINICIANS = (Role.DOCTOR, Role.NURSE)


class Basis(StrEnum):
    NONE = "UNSPECIFIED"
    SELF = "SELF"
    CARE_RELATIONSHIP = "CARE_RELATIONSHIP"
    GRANT = "GRANT"
    EMERGENCY = "EMERGENCY"


class Action(StrEnum):
    READ = "READ"
    WRITE = "WRITE"
    ACCESS_CHANGE = "ACCESS_CHANGE"


@dataclass(frozen=True)
class Relationship:
    """What the records service knows about a caller and a patient, read in one query."""

    patient_known: bool
    care_relationship: bool  # a doctor's non-cancelled appointment with the patient, recent or ahead
    appointment_today: bool  # the patient has a non-cancelled appointment today (a nurse's intake)
    grant_id: str | None = None  # an active grant of the caller on this chart
    grant_kind: str | None = None  # PATIENT or EMERGENCY


@dataclass(frozen=True)
class Decision:
    allowed: bool
    basis: Basis
    grant_id: str | None = None
    reason: str = ""  # why not, in the caller's terms (no content)

    @property
    def emergency(self) -> bool:
        return self.basis is Basis.EMERGENCY


class NoCareRelationship(PermissionDenied):
    """A clinician without a care relationship, grant or emergency access (ErrorInfo reason)."""

    reason = "NO_CARE_RELATIONSHIP"


def decide(  # noqa: PLR0911 - one return per rule reads best
    me: Caller, patient_id: str, rel: Relationship, action: Action, sections: frozenset
) -> Decision:
    """May `me` read or write `sections` of `patient_id`'s chart? Never raises: the caller audits."""
    if me.role is Role.PATIENT:
        if me.user_id != patient_id or not rel.patient_known:
            return Decision(False, Basis.NONE, reason="not_found")
        if action is Action.READ:
            return Decision(True, Basis.SELF)
        return Decision(False, Basis.NONE, reason="a patient reads their chart but does not write it")
    if me.role not in CLINICIANS:
        return Decision(
            False, Basis.NONE, reason=f"a {me.role.lower()} never reads or writes clinical content"
        )
    if not rel.patient_known:
        return Decision(False, Basis.NONE, reason="not_found")
    if me.role is Role.NURSE:
        allowed = NURSE_READS if action is Action.READ else NURSE_WRITES
        if not sections <= allowed:
            return Decision(False, Basis.NONE, reason="a nurse may not do this with a chart")
    if rel.grant_id and rel.grant_kind == "EMERGENCY":
        return Decision(True, Basis.EMERGENCY, rel.grant_id)
    if rel.grant_id:
        return Decision(True, Basis.GRANT, rel.grant_id)
    if (me.role is Role.DOCTOR and rel.care_relationship) or (
        me.role is Role.NURSE and rel.appointment_today
    ):
        return Decision(True, Basis.CARE_RELATIONSHIP)
    return Decision(
        False,
        Basis.NONE,
        reason="no care relationship with this patient: request access, or break the glass in an emergency",
    )


def refuse(decision: Decision, patient_id: str) -> None:
    """Raise what a refused decision means for the caller."""
    if decision.reason == "not_found":
        raise NotFound(f"no chart for patient {patient_id}")
    if decision.reason.startswith("no care relationship"):
        raise NoCareRelationship(decision.reason)
    raise PermissionDenied(decision.reason)


def care_window_start(now: datetime, window_days: float) -> datetime:
    return now - timedelta(days=window_days)


# -- chart entries ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Allergy:
    substance: str
    reaction: str = ""
    severity: str = "UNSPECIFIED"


@dataclass(frozen=True)
class ChartVersion:
    version: int
    running_notes: str
    allergies: list[Allergy]
    author_id: str
    create_time: datetime


@dataclass(frozen=True)
class CareAppointment:
    """An appointment as the records service projects it from appointment events."""

    patient_id: str
    doctor_id: str
    status: str


def check_encounter_appointment(me: Caller, patient_id: str, appointment: CareAppointment | None) -> None:
    """An encounter names an appointment of this patient with the doctor writing it, not cancelled.
    (A colleague covering a visit opens an encounter without appointment_id: whose visit an
    appointment was stays true in the chart.)"""
    if appointment is None:
        raise NotFound("encounter.appointment_id: no such appointment")
    if appointment.patient_id != patient_id:
        raise FailedPrecondition("encounter.appointment_id is another patient's appointment")
    if appointment.doctor_id != me.user_id:
        raise FailedPrecondition("encounter.appointment_id is an appointment with another doctor")
    if appointment.status == "CANCELLED":
        raise FailedPrecondition("encounter.appointment_id is a cancelled appointment")


@dataclass(frozen=True)
class Encounter:
    id: str
    patient_id: str
    clinician_id: str
    appointment_id: str | None
    encounter_time: datetime
    chief_complaint: str
    create_time: datetime


SOAP = ("subjective", "objective", "assessment", "plan")


@dataclass(frozen=True)
class Soap:
    subjective: str = ""
    objective: str = ""
    assessment: str = ""
    plan: str = ""

    def amended(self, changes: dict[str, str]) -> Soap:
        return replace(self, **changes)

    def check(self, prefix: str = "note") -> Soap:
        if not any(getattr(self, name).strip() for name in SOAP):
            raise InvalidArgument(
                prefix, "a note needs text in at least one of subjective, objective, assessment, plan"
            )
        return self


@dataclass(frozen=True)
class Note:
    id: str
    patient_id: str
    encounter_id: str | None
    author_id: str
    soap: Soap
    revision: int
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class NoteRevision:
    revision: int
    soap: Soap
    author_id: str
    create_time: datetime


def may_amend(me: Caller, note: Note) -> None:
    if note.author_id != me.user_id:
        raise PermissionDenied("only the note's author amends it; write a new note instead")


@dataclass(frozen=True)
class Diagnosis:
    id: str
    patient_id: str
    encounter_id: str | None
    code: str
    description: str
    code_title: str
    status: str
    diagnosed_by: str
    create_time: datetime
    update_time: datetime


DIAGNOSIS_NEXT = {"ACTIVE": {"RESOLVED", "ENTERED_IN_ERROR"}, "RESOLVED": {"ACTIVE", "ENTERED_IN_ERROR"}}


def diagnosis_status_change(current: str, wanted: str) -> str:
    if wanted == current:
        return current
    if wanted not in DIAGNOSIS_NEXT.get(current, set()):
        if current == "ENTERED_IN_ERROR":
            raise FailedPrecondition("a diagnosis entered in error stays so: record a new diagnosis")
        raise InvalidArgument("diagnosis.status", "must be ACTIVE, RESOLVED or ENTERED_IN_ERROR")
    return wanted


@dataclass(frozen=True)
class Prescription:
    id: str
    patient_id: str
    encounter_id: str | None
    prescriber_id: str
    drug: str
    strength: str
    dose: str
    route: str
    frequency: str
    duration_days: int
    status: str
    create_time: datetime
    update_time: datetime


def prescription_status_change(current: str, wanted: str) -> str:
    if wanted not in ("COMPLETED", "DISCONTINUED"):
        raise InvalidArgument("prescription.status", "must be COMPLETED or DISCONTINUED")
    if current != "ACTIVE":
        raise FailedPrecondition(f"the prescription is {current} already")
    return wanted


VITALS = (
    "systolic_mmhg",
    "diastolic_mmhg",
    "heart_rate_bpm",
    "respiratory_rate",
    "temperature_celsius",
    "oxygen_saturation_percent",
    "weight_kg",
    "height_cm",
)


@dataclass(frozen=True)
class VitalSigns:
    id: str
    patient_id: str
    encounter_id: str | None
    recorded_by: str
    measure_time: datetime
    values: dict[str, float | int]
    create_time: datetime


def check_vitals(values: dict[str, float | int], prefix: str = "vital_signs") -> dict[str, float | int]:
    """Ranges are buf.validate rules of the contract; here what needs two values or none at all."""
    if not values:
        raise InvalidArgument(prefix, "at least one measurement is required")
    systolic, diastolic = values.get("systolic_mmhg"), values.get("diastolic_mmhg")
    if systolic is not None and diastolic is not None and diastolic >= systolic:
        raise InvalidArgument(f"{prefix}.diastolic_mmhg", "must be below systolic_mmhg")
    return values


@dataclass(frozen=True)
class Chart:
    patient_id: str
    version: ChartVersion | None
    encounters: list[Encounter] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    prescriptions: list[Prescription] = field(default_factory=list)
    vital_signs: list[VitalSigns] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    update_time: datetime | None = None


# -- access requests and grants -----------------------------------------------------------------
@dataclass(frozen=True)
class AccessRequest:
    id: str
    patient_id: str
    requester_id: str
    reason: str
    status: str
    access_grant_id: str | None
    create_time: datetime
    decide_time: datetime | None


@dataclass(frozen=True)
class AccessGrant:
    id: str
    patient_id: str
    grantee_id: str
    kind: str
    access_request_id: str | None
    justification: str
    expire_time: datetime | None
    revoke_time: datetime | None
    create_time: datetime

    def active(self, now: datetime) -> bool:
        return self.revoke_time is None and (self.expire_time is None or self.expire_time > now)


def check_decidable(request: AccessRequest, grantee_id: str | None = None) -> None:
    if request.status != "PENDING":
        raise FailedPrecondition(f"the access request is {request.status} already")
    if grantee_id is not None and request.requester_id != grantee_id:
        raise FailedPrecondition("the access request is from someone else than access_grant.grantee_id")


def check_expiry(expire_time: datetime | None, now: datetime) -> None:
    if expire_time is not None and expire_time <= now:
        raise InvalidArgument("access_grant.expire_time", "must be in the future")


def may_manage_access(me: Caller, patient_id: str) -> None:
    """List requests, grants and the access log of a chart: the patient, admins, clinicians (own)."""
    if me.role is Role.PATIENT and me.user_id != patient_id:
        raise NotFound(f"no chart for patient {patient_id}")
    if me.role not in (Role.PATIENT, Role.ADMIN, Role.DOCTOR, Role.NURSE):
        raise PermissionDenied(f"a {me.role.lower()} does not see access to charts")


@dataclass(frozen=True)
class LogEntry:
    sequence: int
    id: str
    patient_id: str | None
    actor_id: str
    actor_role: str
    action: str
    basis: str
    access_grant_id: str | None
    method: str
    outcome: str
    reason: str
    request_id: str
    emergency: bool
    create_time: datetime
