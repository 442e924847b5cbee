from datetime import date

import pytest

from clinic_platform.auth import Caller, Role
from clinic_platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from user_management import domain
from user_management.domain import Preferences, Profile


def person(role: Role, user_id: str = "me") -> Caller:
    return Caller(user_id, role, "sid", "token")


@pytest.mark.parametrize(
    ("password", "words"),
    [
        ("short", "at least 12"),
        ("x" * 129, "at most 128"),
        ("Password1234", "too common"),
        ("aaaaaaaaaaaaaa", "too common"),
        ("my patricia pass!", "email"),
    ],
)
def test_the_password_policy_names_the_rule_that_was_broken(password, words):
    with pytest.raises(InvalidArgument, match=words):
        domain.check_password(password, Profile(email="patricia@example.org"))


def test_a_long_unusual_password_is_accepted():
    domain.check_password("correct horse battery staple", Profile(email="pat@example.org"))


def test_a_patient_needs_a_birth_date_and_only_doctors_have_a_specialty():
    with pytest.raises(InvalidArgument, match="birth_date"):
        domain.check_profile(Profile("p@example.org", "Pat", "Doe"), role=Role.PATIENT)
    with pytest.raises(InvalidArgument, match="specialty: is required"):
        domain.check_profile(Profile("d@example.org", "Dee", "Doc"), role=Role.DOCTOR)
    with pytest.raises(InvalidArgument, match="only for doctors"):
        domain.check_profile(Profile("n@example.org", "N", "N", specialty="Cardio"), role=Role.NURSE)
    ok = domain.check_profile(
        Profile(" p@example.org ", " Pat ", "Doe", birth_date=date(1990, 1, 1)), role=Role.PATIENT
    )
    assert (ok.email, ok.given_name) == ("p@example.org", "Pat")


@pytest.mark.parametrize(
    ("caller", "target_id", "target_role", "paths", "outcome"),
    [
        (person(Role.PATIENT), "me", Role.PATIENT, {"phone_number"}, None),
        (person(Role.PATIENT), "me", Role.PATIENT, {"role"}, PermissionDenied),
        (person(Role.PATIENT), "me", Role.PATIENT, {"status"}, PermissionDenied),
        (person(Role.PATIENT), "me", Role.PATIENT, {"specialty"}, PermissionDenied),
        (person(Role.PATIENT), "other", Role.PATIENT, {"phone_number"}, NotFound),
        (person(Role.DOCTOR), "me", Role.DOCTOR, {"specialty"}, None),
        (person(Role.RECEPTIONIST), "other", Role.PATIENT, {"email", "phone_number"}, None),
        (person(Role.RECEPTIONIST), "other", Role.PATIENT, {"given_name"}, PermissionDenied),
        (person(Role.RECEPTIONIST), "other", Role.DOCTOR, {"phone_number"}, PermissionDenied),
        (person(Role.ADMIN), "other", Role.DOCTOR, {"role", "status", "specialty"}, None),
        (person(Role.ADMIN), "me", Role.ADMIN, {"role"}, PermissionDenied),
        (person(Role.ADMIN), "me", Role.ADMIN, {"status"}, PermissionDenied),
        (person(Role.ADMIN), "me", Role.ADMIN, {"display_name"}, None),
    ],
)
def test_who_may_change_which_fields(caller, target_id, target_role, paths, outcome):
    if outcome is None:
        domain.may_update(caller, target_id, target_role, paths)
    else:
        with pytest.raises(outcome):
            domain.may_update(caller, target_id, target_role, paths)


def test_only_admins_create_staff_and_receptionists_register_patients():
    domain.may_create(person(Role.ADMIN), Role.ADMIN)
    domain.may_create(person(Role.RECEPTIONIST), Role.PATIENT)
    for role in (Role.ADMIN, Role.DOCTOR):
        with pytest.raises(PermissionDenied):
            domain.may_create(person(Role.RECEPTIONIST), role)
    with pytest.raises(PermissionDenied):
        domain.may_create(person(Role.DOCTOR), Role.PATIENT)


def test_the_last_active_admin_stays():
    with pytest.raises(FailedPrecondition):
        domain.keep_an_admin(0)
    domain.keep_an_admin(1)


def test_notification_preferences_default_to_email_and_sms_when_there_is_a_phone():
    prefs = Preferences()
    assert prefs.channels_for("APPOINTMENT_REMINDER", has_phone=True) == ["EMAIL", "SMS"]
    assert prefs.channels_for("APPOINTMENT_REMINDER", has_phone=False) == ["EMAIL"]
    opted = domain.check_preferences([("BILLING", ["PUSH", "EMAIL"])], ["SMS"])
    assert opted.channels_for("BILLING", has_phone=True) == ["PUSH", "EMAIL"]
    assert opted.channels_for("APPOINTMENT_REMINDER", has_phone=True) == ["EMAIL"]  # SMS opted out
    with pytest.raises(InvalidArgument, match="listed twice"):
        domain.check_preferences([("BILLING", ["EMAIL"]), ("BILLING", ["SMS"])], [])


def test_no_one_deactivates_their_own_account():
    with pytest.raises(PermissionDenied, match="their own account"):
        domain.may_deactivate(person(Role.ADMIN), "me")
    domain.may_deactivate(person(Role.ADMIN), "other")
