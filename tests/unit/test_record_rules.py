"""The medical records service's pure rules: who may read or write which section of a chart on
which ground (role x relationship x section), note revisions, vital signs, diagnosis and
prescription transitions, access requests and grants."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from clinic_platform.auth import Caller, Role
from clinic_platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from medical_records import domain, policy
from medical_records.policy import ALL_SECTIONS, Action, Basis, Relationship, Section

PATIENT = str(uuid.uuid4())
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def caller(role: Role, user_id: str | None = None) -> Caller:
    return Caller(user_id or str(uuid.uuid4()), role, "session", "token")


def rel(*, known=True, care=False, today=False, grant: str | None = None) -> Relationship:
    return Relationship(known, care, today, "grant-1" if grant else None, grant)


NONE = rel()
CARE = rel(care=True)
TODAY = rel(today=True)
GRANT = rel(grant="PATIENT")
EMERGENCY = rel(grant="EMERGENCY")


def decide(me: Caller, relationship: Relationship, action: Action, sections=ALL_SECTIONS, patient=PATIENT):
    return policy.decide(me, patient, relationship, action, frozenset(sections))


# -- the patient ---------------------------------------------------------------------------------
def test_a_patient_reads_their_whole_chart_but_never_writes_it():
    me = caller(Role.PATIENT, PATIENT)
    assert decide(me, NONE, Action.READ) == policy.Decision(True, Basis.SELF)
    written = decide(me, NONE, Action.WRITE, {Section.NOTES})
    assert not written.allowed
    with pytest.raises(PermissionDenied):
        policy.refuse(written, PATIENT)


def test_another_patients_chart_does_not_exist_for_a_patient():
    refused = decide(caller(Role.PATIENT), CARE, Action.READ)
    assert not refused.allowed
    with pytest.raises(NotFound):
        policy.refuse(refused, PATIENT)


# -- staff who never see content -----------------------------------------------------------------
@pytest.mark.parametrize("role", [Role.RECEPTIONIST, Role.ADMIN, Role.ANALYST])
@pytest.mark.parametrize("relationship", [NONE, CARE, TODAY, GRANT, EMERGENCY], ids=str)
@pytest.mark.parametrize("action", [Action.READ, Action.WRITE])
def test_receptionists_admins_and_analysts_never_read_or_write_content(role, relationship, action):
    decision = decide(caller(role), relationship, action)
    assert not decision.allowed
    with pytest.raises(PermissionDenied) as refused:
        policy.refuse(decision, PATIENT)
    assert not isinstance(refused.value, policy.NoCareRelationship)  # asking for access would not help


# -- doctors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("relationship", "basis"),
    [(CARE, Basis.CARE_RELATIONSHIP), (GRANT, Basis.GRANT), (EMERGENCY, Basis.EMERGENCY)],
)
@pytest.mark.parametrize("action", [Action.READ, Action.WRITE])
@pytest.mark.parametrize("section", list(Section))
def test_a_doctor_with_access_reads_and_writes_every_section(relationship, basis, action, section):
    decision = decide(caller(Role.DOCTOR), relationship, action, {section})
    assert decision.allowed and decision.basis is basis
    assert decision.emergency is (basis is Basis.EMERGENCY)


@pytest.mark.parametrize("relationship", [NONE, TODAY], ids=["nothing", "an appointment today, not theirs"])
def test_a_doctor_without_a_relationship_is_told_to_request_access(relationship):
    decision = decide(caller(Role.DOCTOR), relationship, Action.READ)
    assert not decision.allowed
    with pytest.raises(policy.NoCareRelationship, match="request access"):
        policy.refuse(decision, PATIENT)


def test_an_emergency_grant_wins_over_a_care_relationship_so_the_log_marks_it():
    both = Relationship(True, True, False, "grant-1", "EMERGENCY")
    assert decide(caller(Role.DOCTOR), both, Action.READ).basis is Basis.EMERGENCY


def test_an_unknown_patient_is_not_found_for_clinicians():
    decision = decide(caller(Role.DOCTOR), rel(known=False, care=True), Action.READ)
    with pytest.raises(NotFound):
        policy.refuse(decision, PATIENT)


# -- nurses ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("relationship", [TODAY, GRANT, EMERGENCY], ids=["today", "grant", "emergency"])
@pytest.mark.parametrize("section", list(Section))
def test_a_nurse_reads_allergies_prescriptions_and_vitals_and_writes_vitals_only(relationship, section):
    nurse = caller(Role.NURSE)
    assert decide(nurse, relationship, Action.READ, {section}).allowed is (section in policy.NURSE_READS)
    assert decide(nurse, relationship, Action.WRITE, {section}).allowed is (section is Section.VITAL_SIGNS)


def test_a_nurse_asking_for_more_than_her_sections_is_refused_whatever_the_relationship():
    decision = decide(caller(Role.NURSE), EMERGENCY, Action.READ, ALL_SECTIONS)
    assert not decision.allowed
    with pytest.raises(PermissionDenied):
        policy.refuse(decision, PATIENT)


def test_a_nurse_needs_an_appointment_of_the_patient_today_not_a_doctors_care_relationship():
    nurse = caller(Role.NURSE)
    assert not decide(nurse, CARE, Action.READ, policy.NURSE_READS).allowed
    assert decide(nurse, TODAY, Action.READ, policy.NURSE_READS).basis is Basis.CARE_RELATIONSHIP


def test_the_care_window_reaches_back_the_configured_days():
    assert policy.care_window_start(NOW, 90) == NOW - timedelta(days=90)


# -- access requests and grants --------------------------------------------------------------------
def request(status="PENDING", requester="doctor-1") -> policy.AccessRequest:
    return policy.AccessRequest("r", PATIENT, requester, "why", status, None, NOW, None)


def test_only_a_pending_request_is_decided_and_only_for_its_requester():
    policy.check_decidable(request(), "doctor-1")
    with pytest.raises(FailedPrecondition, match="DENIED"):
        policy.check_decidable(request("DENIED"))
    with pytest.raises(FailedPrecondition, match="someone else"):
        policy.check_decidable(request(), "doctor-2")


def test_a_grant_ends_in_the_future_within_the_longest_and_is_active_until_it_ends_or_is_revoked():
    longest = timedelta(days=90)
    with pytest.raises(InvalidArgument, match=r"access_grant\.expire_time"):
        policy.grant_end(NOW, NOW, longest)
    with pytest.raises(InvalidArgument, match=r"at most 90 days ahead"):
        policy.grant_end(NOW + timedelta(days=91), NOW, longest)
    assert policy.grant_end(None, NOW, longest) == NOW + longest  # every grant ends
    assert policy.grant_end(NOW + timedelta(days=3), NOW, longest) == NOW + timedelta(days=3)
    grant = policy.AccessGrant("g", PATIENT, "d", "PATIENT", None, "", NOW + timedelta(hours=1), None, NOW)
    assert grant.active(NOW) and not grant.active(NOW + timedelta(hours=1))
    revoked = policy.AccessGrant("g", PATIENT, "d", "PATIENT", None, "", None, NOW, NOW)
    assert not revoked.active(NOW)


@pytest.mark.parametrize(
    ("role", "own", "outcome"),
    [
        (Role.PATIENT, True, None),
        (Role.PATIENT, False, NotFound),
        (Role.ADMIN, False, None),
        (Role.DOCTOR, False, None),
        (Role.RECEPTIONIST, False, PermissionDenied),
        (Role.ANALYST, False, PermissionDenied),
    ],
)
def test_who_lists_a_charts_requests_grants_and_log(role, own, outcome):
    me = caller(role, PATIENT if own else None)
    if outcome is None:
        policy.may_manage_access(me, PATIENT)
    else:
        with pytest.raises(outcome):
            policy.may_manage_access(me, PATIENT)


# -- notes and their revisions ---------------------------------------------------------------------
def note(author: str, soap: domain.Soap) -> domain.Note:
    return domain.Note("n", PATIENT, None, author, soap, 1, NOW, NOW)


def test_an_amendment_keeps_the_untouched_sections_and_only_the_author_amends():
    author = caller(Role.DOCTOR)
    first = note(author.user_id, domain.Soap("cough", "", "bronchitis", "rest"))
    amended = first.soap.amended({"plan": "rest and fluids"}).check()
    assert amended == domain.Soap("cough", "", "bronchitis", "rest and fluids")
    assert first.soap.plan == "rest"  # the earlier revision is not changed
    domain.may_amend(author, first)
    with pytest.raises(PermissionDenied, match="author"):
        domain.may_amend(caller(Role.DOCTOR), first)


def test_a_note_needs_text_in_one_section_and_blanking_all_is_refused():
    with pytest.raises(InvalidArgument, match="note"):
        domain.Soap(" ", "\n", "", "").check()
    with pytest.raises(InvalidArgument):
        domain.Soap("cough").amended({"subjective": "  "}).check()


# -- vital signs -----------------------------------------------------------------------------------
def test_vitals_need_one_measurement_and_a_diastolic_below_the_systolic():
    assert domain.check_vitals({"heart_rate_bpm": 70}) == {"heart_rate_bpm": 70}
    with pytest.raises(InvalidArgument, match="vital_signs: at least one"):
        domain.check_vitals({})
    with pytest.raises(InvalidArgument, match=r"vital_signs\.diastolic_mmhg"):
        domain.check_vitals({"systolic_mmhg": 80, "diastolic_mmhg": 80})
    assert domain.check_vitals({"systolic_mmhg": 120, "diastolic_mmhg": 80})


# -- diagnoses and prescriptions -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        ("ACTIVE", "RESOLVED"),
        ("RESOLVED", "ACTIVE"),
        ("ACTIVE", "ENTERED_IN_ERROR"),
        ("RESOLVED", "ENTERED_IN_ERROR"),
        ("ACTIVE", "ACTIVE"),
    ],
)
def test_diagnosis_transitions_that_are_allowed(current, wanted):
    assert domain.diagnosis_status_change(current, wanted) == wanted


def test_a_diagnosis_entered_in_error_stays_so_and_an_unknown_status_names_the_field():
    with pytest.raises(FailedPrecondition, match="entered in error"):
        domain.diagnosis_status_change("ENTERED_IN_ERROR", "ACTIVE")
    with pytest.raises(InvalidArgument, match=r"diagnosis\.status"):
        domain.diagnosis_status_change("ACTIVE", "UNSPECIFIED")


def test_a_prescription_ends_once_as_completed_or_discontinued():
    assert domain.prescription_status_change("ACTIVE", "DISCONTINUED") == "DISCONTINUED"
    assert domain.prescription_status_change("ACTIVE", "COMPLETED") == "COMPLETED"
    with pytest.raises(FailedPrecondition, match="COMPLETED already"):
        domain.prescription_status_change("COMPLETED", "DISCONTINUED")
    with pytest.raises(InvalidArgument, match=r"prescription\.status"):
        domain.prescription_status_change("ACTIVE", "ACTIVE")


# -- encounters and their appointment --------------------------------------------------------------
def test_an_encounter_names_the_writing_doctors_own_appointment_with_this_patient_not_cancelled():
    doctor = caller(Role.DOCTOR)
    domain.check_encounter_appointment(
        doctor, PATIENT, domain.CareAppointment(PATIENT, doctor.user_id, "BOOKED")
    )
    cases = [
        (None, NotFound, "no such appointment"),
        (domain.CareAppointment("someone", doctor.user_id, "BOOKED"), FailedPrecondition, "another patient"),
        (domain.CareAppointment(PATIENT, "colleague", "BOOKED"), FailedPrecondition, "another doctor"),
        (domain.CareAppointment(PATIENT, doctor.user_id, "CANCELLED"), FailedPrecondition, "cancelled"),
    ]
    for appointment, error, words in cases:
        with pytest.raises(error, match=words):
            domain.check_encounter_appointment(doctor, PATIENT, appointment)
