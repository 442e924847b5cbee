"""The chart's rules, in plain Python: the shape of chart entries, SOAP notes and their revisions,
diagnosis and prescription transitions, vital signs that need two values, and which appointment an
encounter may name. Who may see or change them is policy.py's."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from clinic_platform.auth import Caller
from clinic_platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied


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
