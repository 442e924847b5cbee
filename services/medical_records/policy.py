"""Who may see and change what in a chart, on which ground, in plain Python: the decision every
chart RPC asks for (role x relationship x section), and the rules of access requests and grants.
medical_records.gate applies it (and audits it); the chart's own rules are in domain.py."""

from __future__ import annotations

from dataclasses import dataclass, replace
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


def grant_end(expire_time: datetime | None, now: datetime, longest: timedelta) -> datetime:
    """When a patient's grant ends: the time they chose, or `longest` from now; every grant ends."""
    if expire_time is None:
        return now + longest
    if expire_time <= now:
        raise InvalidArgument("access_grant.expire_time", "must be in the future")
    if expire_time > now + longest:
        raise InvalidArgument("access_grant.expire_time", f"must be at most {longest.days} days ahead")
    return expire_time


def may_manage_access(me: Caller, patient_id: str) -> None:
    """List requests, grants and the access log of a chart: the patient, admins, clinicians (own)."""
    if me.role is Role.PATIENT and me.user_id != patient_id:
        raise NotFound(f"no chart for patient {patient_id}")
    if me.role not in (Role.PATIENT, Role.ADMIN, Role.DOCTOR, Role.NURSE):
        raise PermissionDenied(f"a {me.role.lower()} does not see access to charts")


def log_refusal(me: Caller, patient_id: str | None) -> Exception | None:
    """Why `me` may not list the access log of `patient_id`'s chart (None: every chart's), if not."""
    if patient_id is None and me.role is not Role.ADMIN:
        return PermissionDenied("only admins list every chart's access log")
    if me.role is Role.PATIENT and me.user_id != patient_id:
        return NotFound(f"no chart for patient {patient_id}")
    if me.role not in (Role.PATIENT, Role.ADMIN):
        return PermissionDenied("only the patient and admins read a chart's access log")
    return None


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


# -- what a reader sees of access records ---------------------------------------------------------
# A request's reason, a break-the-glass justification and a log entry's reason are free text that a
# clinician wrote and may be clinical: only the chart's patient and the clinician who wrote it see
# them. An admin sees the metadata (who, when, on which ground, what outcome), never the text.
def readable_request(me: Caller, item: AccessRequest) -> AccessRequest:
    return item if me.user_id in (item.patient_id, item.requester_id) else replace(item, reason="")


def readable_grant(me: Caller, item: AccessGrant) -> AccessGrant:
    return item if me.user_id in (item.patient_id, item.grantee_id) else replace(item, justification="")


def readable_entry(me: Caller, item: LogEntry) -> LogEntry:
    return item if me.user_id in (item.patient_id, item.actor_id) else replace(item, reason="")
