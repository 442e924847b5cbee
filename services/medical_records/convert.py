"""Domain objects -> contract messages of clinic.medical_records.v1, and the few request parts
that need more than a field copy to become domain values (allergies, prescription fields, page
tokens)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

from google.protobuf.timestamp_pb2 import Timestamp

from clinic.medical_records.v1 import resources_pb2 as r
from clinic_platform import convert
from clinic_platform.convert import enum_name, parse_uuid
from clinic_platform.errors import InvalidArgument
from medical_records import domain, policy

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(moment: datetime | None) -> Timestamp | None:
    """The kit's conversion without Timestamp.FromDatetime's calendar arithmetic (a chart of 200
    entries has ~450 times: that was a sixth of the service's CPU per read)."""
    if moment is None:
        return None
    delta = moment - EPOCH
    return Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


@cache
def enum_value(enum_type, name: str) -> int:
    return convert.enum_value(enum_type, name)


def allergy(a: domain.Allergy) -> r.Allergy:
    return r.Allergy(
        substance=a.substance, reaction=a.reaction, severity=enum_value(r.AllergySeverity, a.severity)
    )


def encounter(e: domain.Encounter) -> r.Encounter:
    return r.Encounter(
        id=e.id,
        patient_id=e.patient_id,
        clinician_id=e.clinician_id,
        appointment_id=e.appointment_id or "",
        encounter_time=timestamp(e.encounter_time),
        chief_complaint=e.chief_complaint,
        create_time=timestamp(e.create_time),
    )


def note(n: domain.Note) -> r.Note:
    return r.Note(
        id=n.id,
        patient_id=n.patient_id,
        encounter_id=n.encounter_id or "",
        author_id=n.author_id,
        subjective=n.soap.subjective,
        objective=n.soap.objective,
        assessment=n.soap.assessment,
        plan=n.soap.plan,
        revision=n.revision,
        create_time=timestamp(n.create_time),
        update_time=timestamp(n.update_time),
    )


def revision(v: domain.NoteRevision) -> r.NoteRevision:
    return r.NoteRevision(
        revision=v.revision,
        subjective=v.soap.subjective,
        objective=v.soap.objective,
        assessment=v.soap.assessment,
        plan=v.soap.plan,
        author_id=v.author_id,
        create_time=timestamp(v.create_time),
    )


def diagnosis(d: domain.Diagnosis) -> r.Diagnosis:
    return r.Diagnosis(
        id=d.id,
        patient_id=d.patient_id,
        encounter_id=d.encounter_id or "",
        code=d.code,
        description=d.description,
        code_title=d.code_title,
        status=enum_value(r.DiagnosisStatus, d.status),
        diagnosed_by=d.diagnosed_by,
        create_time=timestamp(d.create_time),
        update_time=timestamp(d.update_time),
    )


def prescription(p: domain.Prescription) -> r.Prescription:
    return r.Prescription(
        id=p.id,
        patient_id=p.patient_id,
        encounter_id=p.encounter_id or "",
        prescriber_id=p.prescriber_id,
        drug=p.drug,
        strength=p.strength,
        dose=p.dose,
        route=p.route,
        frequency=p.frequency,
        duration_days=p.duration_days,
        status=enum_value(r.PrescriptionStatus, p.status),
        create_time=timestamp(p.create_time),
        update_time=timestamp(p.update_time),
    )


def vitals(v: domain.VitalSigns) -> r.VitalSigns:
    return r.VitalSigns(
        id=v.id,
        patient_id=v.patient_id,
        encounter_id=v.encounter_id or "",
        recorded_by=v.recorded_by,
        measure_time=timestamp(v.measure_time),
        create_time=timestamp(v.create_time),
        **v.values,
    )


def chart_version(v: domain.ChartVersion) -> r.ChartVersion:
    return r.ChartVersion(
        version=v.version,
        running_notes=v.running_notes,
        allergies=[allergy(a) for a in v.allergies],
        author_id=v.author_id,
        create_time=timestamp(v.create_time),
    )


def chart(c: domain.Chart) -> r.Chart:
    return r.Chart(
        patient_id=c.patient_id,
        running_notes=c.version.running_notes if c.version else "",
        allergies=[allergy(a) for a in c.version.allergies] if c.version else [],
        encounters=[encounter(e) for e in c.encounters],
        notes=[note(n) for n in c.notes],
        diagnoses=[diagnosis(d) for d in c.diagnoses],
        prescriptions=[prescription(p) for p in c.prescriptions],
        vital_signs=[vitals(v) for v in c.vital_signs],
        update_time=timestamp(c.update_time),
        truncated_sections=c.truncated,
        version=c.version.version if c.version else 0,
    )


def access_request(a: policy.AccessRequest) -> r.AccessRequest:
    return r.AccessRequest(
        id=a.id,
        patient_id=a.patient_id,
        requester_id=a.requester_id,
        reason=a.reason,
        status=enum_value(r.AccessRequestStatus, a.status),
        access_grant_id=a.access_grant_id or "",
        create_time=timestamp(a.create_time),
        decide_time=timestamp(a.decide_time),
    )


def access_grant(g: policy.AccessGrant, now) -> r.AccessGrant:
    return r.AccessGrant(
        id=g.id,
        patient_id=g.patient_id,
        grantee_id=g.grantee_id,
        kind=enum_value(r.AccessGrantKind, g.kind),
        access_request_id=g.access_request_id or "",
        justification=g.justification,
        expire_time=timestamp(g.expire_time),
        revoke_time=timestamp(g.revoke_time),
        active=g.active(now),
        create_time=timestamp(g.create_time),
    )


def log_entry(e: policy.LogEntry) -> r.AccessLogEntry:
    return r.AccessLogEntry(
        id=e.id,
        patient_id=e.patient_id or "",
        actor_id=e.actor_id,
        actor_role=e.actor_role,
        action=enum_value(r.AccessAction, e.action),
        basis=enum_value(r.AccessBasis, e.basis),
        access_grant_id=e.access_grant_id or "",
        method=e.method,
        create_time=timestamp(e.create_time),
        outcome=enum_value(r.AccessOutcome, e.outcome),
        reason=e.reason,
        request_id=e.request_id,
        sequence=e.sequence,
        emergency=e.emergency,
    )


# -- requests -> domain ---------------------------------------------------------------------------
def allergies_from(allergies) -> list[domain.Allergy]:
    found = [
        domain.Allergy(a.substance.strip(), a.reaction.strip(), enum_name(r.AllergySeverity, a.severity))
        for a in allergies
    ]
    for i, allergy in enumerate(found):
        if not allergy.substance:
            raise InvalidArgument(f"chart.allergies[{i}].substance", "is required")
    return found


def prescription_fields(p: r.Prescription) -> dict[str, str]:
    fields = {f: getattr(p, f).strip() for f in ("drug", "strength", "dose", "route", "frequency")}
    for required in ("drug", "dose", "frequency"):
        if not fields[required]:
            raise InvalidArgument(f"prescription.{required}", "is required")
    return fields


def after_token(page) -> tuple | None:
    if not page.after:
        return None
    try:
        return datetime.fromisoformat(page.after[0]), parse_uuid(page.after[1], "page_token")
    except (ValueError, IndexError):
        raise InvalidArgument("page_token", "is not a page token this list issued") from None


def number_token(page) -> int | None:
    try:
        return int(page.after[0]) if page.after else None
    except ValueError:
        raise InvalidArgument("page_token", "is not a page token this list issued") from None


def newest_key(item) -> list:
    return [item.create_time.isoformat(), item.id]
