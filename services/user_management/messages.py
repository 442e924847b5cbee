"""Proto messages made from accounts: the User and NotificationPreferences resources, and the
events the service publishes (each carries a snapshot of the account, so consumers need no call
back)."""

from __future__ import annotations

from clinic.user_management.v1 import events_pb2, resources_pb2
from clinic_platform.convert import enum_value, timestamp, to_date
from user_management import domain
from user_management.domain import Account


def user(account: Account) -> resources_pb2.User:
    return resources_pb2.User(
        id=str(account.id),
        email=account.email,
        given_name=account.given_name,
        family_name=account.family_name,
        display_name=account.display_name,
        phone_number=account.phone_number,
        birth_date=to_date(account.birth_date),
        role=enum_value(resources_pb2.Role, account.role),
        specialty=account.specialty,
        status=enum_value(resources_pb2.UserStatus, account.status),
        create_time=timestamp(account.create_time),
        update_time=timestamp(account.update_time),
    )


def preferences(account: Account) -> resources_pb2.NotificationPreferences:
    chosen, has_phone = account.preferences, bool(account.phone_number)
    return resources_pb2.NotificationPreferences(
        user_id=str(account.id),
        messages=[
            resources_pb2.MessagePreference(
                kind=enum_value(resources_pb2.MessageKind, kind),
                channels=[enum_value(resources_pb2.Channel, c) for c in chosen.chosen(kind, has_phone)],
            )
            for kind in domain.MESSAGE_KINDS
        ],
        opted_out_channels=[enum_value(resources_pb2.Channel, c) for c in chosen.opted_out_channels],
        update_time=timestamp(account.preferences_update_time),
    )


def _snapshot(event_type, account: Account, **extra):
    return event_type(
        user_id=str(account.id),
        version=account.version,
        email=account.email,
        phone_number=account.phone_number,
        given_name=account.given_name,
        family_name=account.family_name,
        display_name=account.display_name,
        role=enum_value(resources_pb2.Role, account.role),
        specialty=account.specialty,
        notification_preferences=preferences(account),
        **extra,
    )


def registered(account: Account) -> events_pb2.UserRegistered:
    return _snapshot(events_pb2.UserRegistered, account, create_time=timestamp(account.create_time))


def updated(account: Account) -> events_pb2.UserUpdated:
    return _snapshot(
        events_pb2.UserUpdated,
        account,
        status=enum_value(resources_pb2.UserStatus, account.status),
        update_time=timestamp(account.update_time),
    )


def deactivated(account: Account) -> events_pb2.UserDeactivated:
    return events_pb2.UserDeactivated(
        user_id=str(account.id),
        version=account.version,
        role=enum_value(resources_pb2.Role, account.role),
        deactivate_time=timestamp(account.update_time),
    )
