"""Projections this service keeps from other services' events: users (who is a patient, doctor or
nurse) and appointments (care relationships). Events may come twice or out of order: a row keeps
the highest version applied and ignores older ones."""

from __future__ import annotations

import uuid
from datetime import UTC

from clinic.appointments.v1 import events_pb2 as appointment_events
from clinic.user_management.v1 import events_pb2 as user_events
from clinic.user_management.v1 import resources_pb2 as user_resources
from clinic_platform.convert import enum_name
from clinic_platform.db import raw_connection
from clinic_platform.events import EventEnvelope
from medical_records.store import access as sql

STATUS_OF = {
    appointment_events.AppointmentBooked: "CONFIRMED",
    appointment_events.AppointmentRescheduled: "CONFIRMED",
    appointment_events.AppointmentCancelled: "CANCELLED",
    appointment_events.AppointmentCompleted: "COMPLETED",
    appointment_events.AppointmentNoShow: "NO_SHOW",
}


async def on_appointment(session, event, envelope: EventEnvelope) -> None:
    conn = await raw_connection(session)
    await sql.upsert_appointment(
        conn,
        (
            uuid.UUID(event.appointment_id),
            uuid.UUID(event.patient_id),
            uuid.UUID(event.doctor_id),
            event.start_time.ToDatetime(tzinfo=UTC),
            event.end_time.ToDatetime(tzinfo=UTC),
            STATUS_OF[type(event)],
            event.version,
        ),
    )


async def on_user_changed(session, event, envelope: EventEnvelope) -> None:
    active = not (
        isinstance(event, user_events.UserUpdated) and event.status == user_resources.USER_STATUS_DEACTIVATED
    )
    conn = await raw_connection(session)
    await sql.upsert_user(
        conn, uuid.UUID(event.user_id), enum_name(user_resources.Role, event.role), active, event.version
    )


async def on_user_deactivated(session, event, envelope: EventEnvelope) -> None:
    conn = await raw_connection(session)
    await sql.deactivate_user(conn, uuid.UUID(event.user_id), event.version)


APPOINTMENT_HANDLERS = {event: on_appointment for event in STATUS_OF}
USER_HANDLERS = {
    user_events.UserRegistered: on_user_changed,
    user_events.UserUpdated: on_user_changed,
    user_events.UserDeactivated: on_user_deactivated,
}
