"""The doctor directory and the set of known patients, projected from user_management's events,
so booking works while user_management is down. Events may come twice or out of order: a row
keeps the newest user version it applied and ignores older ones."""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from appointments import store
from clinic.user_management.v1 import events_pb2, resources_pb2
from clinic_platform.convert import enum_name
from clinic_platform.events import EventEnvelope


async def _upsert(session: AsyncSession, table, values: dict) -> None:
    statement = insert(table).values(**values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"],
            set_={k: statement.excluded[k] for k in values if k != "id"},
            where=table.c.user_version < statement.excluded.user_version,
        )
    )


async def _retire(session: AsyncSession, table, user_id: uuid.UUID, version: int) -> None:
    await session.execute(
        update(table)
        .where(table.c.id == user_id, table.c.user_version < version)
        .values(active=False, user_version=version)
    )


async def on_user_changed(session: AsyncSession, event, envelope: EventEnvelope) -> None:
    """UserRegistered and UserUpdated carry a full snapshot of the user."""
    user_id = uuid.UUID(event.user_id)
    role = enum_name(resources_pb2.Role, event.role)
    active = not (
        isinstance(event, events_pb2.UserUpdated) and event.status == resources_pb2.USER_STATUS_DEACTIVATED
    )
    version = event.version
    if role == "DOCTOR":
        name = event.display_name or f"{event.given_name} {event.family_name}"
        values = {"id": user_id, "display_name": name, "specialty": event.specialty, "active": active}
        await _upsert(session, store.doctors, values | {"user_version": version})
    else:  # a role change away from doctor takes them out of the directory
        await _retire(session, store.doctors, user_id, version)
    if role == "PATIENT":
        await _upsert(session, store.patients, {"id": user_id, "active": active, "user_version": version})
    else:
        await _retire(session, store.patients, user_id, version)


async def on_user_deactivated(
    session: AsyncSession, event: events_pb2.UserDeactivated, envelope: EventEnvelope
) -> None:
    user_id = uuid.UUID(event.user_id)
    await _retire(session, store.doctors, user_id, event.version)
    await _retire(session, store.patients, user_id, event.version)


HANDLERS = {
    events_pb2.UserRegistered: on_user_changed,
    events_pb2.UserUpdated: on_user_changed,
    events_pb2.UserDeactivated: on_user_deactivated,
}
