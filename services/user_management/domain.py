"""Rules of accounts: the account record, validation, the password policy, who may see and
change what, and the default notification preferences. No gRPC and no SQL here."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from importlib import resources
from typing import Any

from clinic_platform.auth import STAFF, Caller, Role
from clinic_platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
PHONE_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MIN_PASSWORD, MAX_PASSWORD = 12, 128
MAX_NAME = 100

CHANNELS = ("EMAIL", "SMS", "PUSH")
MESSAGE_KINDS = (
    "APPOINTMENT_CONFIRMATION",
    "APPOINTMENT_REMINDER",
    "APPOINTMENT_CANCELLATION",
    "VISIT_SUMMARY",
    "BILLING",
    "CLAIM_DECISION",
    "RECORD_ACCESS",
)

PROFILE_FIELDS = {"given_name", "family_name", "display_name", "email", "phone_number", "birth_date"}
CONTACT_FIELDS = {"email", "phone_number"}
ADMIN_FIELDS = PROFILE_FIELDS | {"specialty", "role", "status"}
CHANGEABLE = PROFILE_FIELDS | {"specialty"}  # what UpdateUser may change besides role and status

ACTIVE, DEACTIVATED = "ACTIVE", "DEACTIVATED"
EMAIL_TAKEN = "an account with this email address already exists"


def _common_passwords() -> frozenset[str]:
    text = resources.files("user_management").joinpath("common_passwords.txt").read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


COMMON_PASSWORDS = _common_passwords()


@dataclass
class Profile:
    """What a person tells us about themself (also the changeable part of an account)."""

    email: str = ""
    given_name: str = ""
    family_name: str = ""
    display_name: str = ""
    phone_number: str = ""
    birth_date: date | None = None
    specialty: str = ""


@dataclass
class Preferences:
    """Channels per kind of message; a kind not listed gets the default."""

    messages: dict[str, list[str]] = field(default_factory=dict)
    opted_out_channels: list[str] = field(default_factory=list)

    def chosen(self, kind: str, has_phone: bool) -> list[str]:
        """The channels listed for a kind, before opt-outs (what the user sees and edits)."""
        return self.messages.get(kind, ["EMAIL", "SMS"] if has_phone else ["EMAIL"])

    def channels_for(self, kind: str, has_phone: bool) -> list[str]:
        wanted = self.chosen(kind, has_phone)
        return [c for c in wanted if c not in self.opted_out_channels and (c != "SMS" or has_phone)]

    def to_json(self) -> dict:
        return {"messages": self.messages, "opted_out_channels": self.opted_out_channels}

    @classmethod
    def from_json(cls, data: dict | None) -> Preferences:
        data = data or {}
        return cls(dict(data.get("messages", {})), list(data.get("opted_out_channels", [])))


@dataclass(frozen=True)
class Account:
    """A user's account as stored."""

    id: uuid.UUID
    email: str
    email_key: str
    given_name: str
    family_name: str
    display_name: str
    phone_number: str
    birth_date: date | None
    role: str
    specialty: str
    status: str
    password_hash: str = field(repr=False)
    preferences: Preferences
    preferences_update_time: datetime
    version: int
    create_time: datetime
    update_time: datetime

    def profile(self) -> Profile:
        return Profile(
            self.email,
            self.given_name,
            self.family_name,
            self.display_name,
            self.phone_number,
            self.birth_date,
            self.specialty,
        )


def normalize_email(email: str, field_name: str = "email") -> str:
    email = email.strip()
    if not email:
        raise InvalidArgument(field_name, "is required")
    if not EMAIL.match(email) or len(email) > 254:
        raise InvalidArgument(field_name, f"{email!r} is not an email address")
    return email


def email_key(email: str) -> str:
    """Emails are unique case-insensitively."""
    return email.strip().lower()


def check_password(password: str, profile: Profile, field_name: str = "password") -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidArgument(field_name, f"must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidArgument(field_name, f"must have at most {MAX_PASSWORD} characters")
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or len(set(password)) < 4:
        raise InvalidArgument(field_name, "is too common or too easy to guess; choose another")
    local_part = profile.email.split("@")[0].lower()
    if len(local_part) >= 4 and local_part in lowered:
        raise InvalidArgument(field_name, "must not contain your email address")


def check_profile(
    profile: Profile, *, role: Role, prefix: str = "", paths: set[str] | None = None
) -> Profile:
    """Validate (and normalize) the fields named in `paths` (all when None); returns the profile."""
    wanted = paths if paths is not None else PROFILE_FIELDS | {"specialty"}
    if "email" in wanted:
        profile.email = normalize_email(profile.email, prefix + "email")
    for attr in ("given_name", "family_name", "display_name"):
        if attr in wanted:
            setattr(
                profile, attr, _name(getattr(profile, attr), prefix + attr, required=attr != "display_name")
            )
    if "phone_number" in wanted:
        profile.phone_number = profile.phone_number.strip().replace(" ", "")
        if profile.phone_number and not PHONE_E164.match(profile.phone_number):
            raise InvalidArgument(prefix + "phone_number", "must be in E.164 form, e.g. +4915112345678")
    if "birth_date" in wanted:
        _check_birth_date(profile.birth_date, role, prefix + "birth_date")
    if "specialty" in wanted:
        profile.specialty = profile.specialty.strip()
        if role is Role.DOCTOR and not profile.specialty:
            raise InvalidArgument(prefix + "specialty", "is required for a doctor")
        if role is not Role.DOCTOR and profile.specialty:
            raise InvalidArgument(prefix + "specialty", "is only for doctors")
    return profile


def _name(value: str, field_name: str, *, required: bool) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidArgument(field_name, "is required")
    if len(value) > MAX_NAME:
        raise InvalidArgument(field_name, f"must have at most {MAX_NAME} characters")
    return value


def _check_birth_date(birth_date: date | None, role: Role, field_name: str) -> None:
    if role is Role.PATIENT and birth_date is None:
        raise InvalidArgument(field_name, "is required for a patient")
    if birth_date is not None and not date(1900, 1, 1) <= birth_date <= date.today():
        raise InvalidArgument(field_name, "must be a real date of birth, not in the future")


def display_name_of(profile: Profile) -> str:
    return profile.display_name or f"{profile.given_name} {profile.family_name}"


# -- who may do what ------------------------------------------------------------------------------
def may_view(caller: Caller, user_id: str) -> None:
    if caller.user_id != user_id and caller.role not in STAFF:
        raise NotFound(f"user {user_id} not found")


def may_list(caller: Caller) -> None:
    if caller.role not in STAFF:
        raise PermissionDenied("only staff may list users")


def may_create(caller: Caller, role: Role) -> None:
    if caller.role is Role.ADMIN:
        return
    if caller.role is Role.RECEPTIONIST and role is Role.PATIENT:
        return
    if caller.role is Role.RECEPTIONIST:
        raise PermissionDenied("a receptionist may only register patients")
    raise PermissionDenied("only an admin may create accounts")


def may_update(caller: Caller, user_id: str, target_role: Role, paths: set[str]) -> None:
    """Raise unless the caller may change these fields of that user."""
    is_self = caller.user_id == user_id
    privileged = paths & {"role", "status"}
    if is_self and privileged:  # not even an admin: another admin must do it
        raise PermissionDenied(f"no one may change their own {', '.join(sorted(privileged))}")
    if caller.role is Role.ADMIN:
        return
    if not is_self and caller.role not in STAFF:
        raise NotFound(f"user {user_id} not found")
    if privileged:
        raise PermissionDenied(f"only an admin may change {', '.join(sorted(privileged))}")
    if is_self:
        allowed = PROFILE_FIELDS | ({"specialty"} if caller.role is Role.DOCTOR else set())
    elif caller.role is Role.RECEPTIONIST and target_role is Role.PATIENT:
        allowed = CONTACT_FIELDS
    else:
        raise PermissionDenied("you may not change this user")
    if not paths <= allowed:
        raise PermissionDenied(f"you may not change {', '.join(sorted(paths - allowed))}")


def may_manage_preferences(caller: Caller, user_id: str) -> None:
    if caller.user_id != user_id and caller.role is not Role.ADMIN:
        raise NotFound(f"user {user_id} not found")


def may_deactivate(caller: Caller, user_id: str) -> None:
    may_view(caller, user_id)  # others learn nothing about the account
    if caller.role is not Role.ADMIN:
        raise PermissionDenied("only admin may do this")
    if caller.user_id == user_id:
        raise PermissionDenied("no one may deactivate their own account; another admin can")


def loses_an_admin(account: Account, role: Role, status: str) -> bool:
    """True when giving the account this role and status takes an active admin away."""
    return (
        account.role == Role.ADMIN.value
        and account.status == ACTIVE
        and (role is not Role.ADMIN or status != ACTIVE)
    )


def keep_an_admin(active_admins_after: int) -> None:
    if active_admins_after < 1:
        raise FailedPrecondition("this would leave the clinic without an active admin")


def check_preferences(messages: list[tuple[str, list[str]]], opted_out: list[str]) -> Preferences:
    seen: dict[str, list[str]] = {}
    for index, (kind, channels) in enumerate(messages):
        if kind not in MESSAGE_KINDS:
            raise InvalidArgument(
                f"notification_preferences.messages[{index}].kind", "must be a message kind"
            )
        if kind in seen:
            raise InvalidArgument(
                f"notification_preferences.messages[{index}].kind", f"{kind} is listed twice"
            )
        if any(c not in CHANNELS for c in channels):
            raise InvalidArgument(
                f"notification_preferences.messages[{index}].channels", "must be EMAIL, SMS or PUSH"
            )
        seen[kind] = list(dict.fromkeys(channels))
    if any(c not in CHANNELS for c in opted_out):
        raise InvalidArgument("notification_preferences.opted_out_channels", "must be EMAIL, SMS or PUSH")
    return Preferences(seen, list(dict.fromkeys(opted_out)))


def profile_changes(current: Profile, wanted: Profile, paths: set[str], role: Role) -> dict[str, Any]:
    """The fields an update changes (with `email_key`): those in `paths` taken from `wanted`,
    checked and normalized; a change of role checks the specialty again."""
    profile = replace(current)
    for path in paths & CHANGEABLE:
        setattr(profile, path, getattr(wanted, path))
    if role is not Role.DOCTOR and "specialty" not in paths:
        profile.specialty = ""  # a specialty belongs to doctors only
    checked = (paths | ({"specialty"} if "role" in paths else set())) & CHANGEABLE
    check_profile(profile, role=role, prefix="user.", paths=checked)
    changes = {path: getattr(profile, path) for path in checked}
    if "email" in changes:
        changes["email_key"] = email_key(profile.email)
    if "display_name" in changes and not changes["display_name"]:
        changes["display_name"] = display_name_of(profile)
    return changes


def with_preferences(current: Preferences, wanted: Preferences, paths: set[str]) -> Preferences:
    """`current` with the parts named in `paths` replaced by `wanted` (already checked)."""
    return Preferences(
        wanted.messages if "messages" in paths else current.messages,
        wanted.opted_out_channels if "opted_out_channels" in paths else current.opted_out_channels,
    )
