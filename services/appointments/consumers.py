"""The doctor directory and the set of known patients, projected from user_management's events,
so booking works while user_management is down (the writes, which ignore stale events, are in
store/directory.py)."""

from __future__ import annotations

import uuid

from appointments.store import directory
from clinic.user_management.v1 import events_pb2, resources_pb2
from clinic_platform.convert import enum_name
from clinic_platform.events import EventEnvelope


async def on_user_changed(session, event, envelope: EventEnvelope) -> None:
    """UserRegistered and UserUpdated carry a full snapshot of the user."""
    user_id = uuid.UUID(event.user_id)
    role = enum_name(resources_pb2.Role, event.role)
    active = not (
        isinstance(event, events_pb2.UserUpdated) and event.status == resources_pb2.USER_STATUS_DEACTIVATED
    )
    version = event.version
    if role == "DOCTOR":
        name = event.display_name or f"{event.given_name} {event.family_name}"
        await directory.save_doctor(
            session, user_id, version, display_name=name, specialty=event.specialty, active=active
        )
    else:  # a role change away from doctor takes them out of the directory
        await directory.retire_doctor(session, user_id, version)
    if role == "PATIENT":
        await directory.save_patient(session, user_id, version, active=active)
    else:
        await directory.retire_patient(session, user_id, version)


async def on_user_deactivated(session, event: events_pb2.UserDeactivated, envelope: EventEnvelope) -> None:
    user_id = uuid.UUID(event.user_id)
    await directory.retire_doctor(session, user_id, event.version)
    await directory.retire_patient(session, user_id, event.version)


HANDLERS = {
    events_pb2.UserRegistered: on_user_changed,
    events_pb2.UserUpdated: on_user_changed,
    events_pb2.UserDeactivated: on_user_deactivated,
}
