"""Setting up a clinic through the API: doctors with schedules, future days in the clinic's zone."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import grpc

from clinic.appointments.v1 import appointments_service_pb2 as ap
from clinic.appointments.v1 import appointments_service_pb2_grpc as ap_rpc
from clinic.appointments.v1 import resources_pb2
from tests.support.db import fetch
from tests.support.identity import Edge, Person
from tests.support.polling import until

ZONE = ZoneInfo("Europe/Berlin")  # the test stack's clinic time zone (the default)
ALL_DAY = [
    {"dayOfWeek": day, "startTime": {"hours": 0}, "endTime": {"hours": 23, "minutes": 30}}
    for day in ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
]
VISITS = [
    {"code": "CONSULT", "name": "Consultation", "durationMinutes": 30},
    {"code": "LONG", "name": "Long visit", "durationMinutes": 60},
]


def future_day(days_ahead: int) -> date:
    return datetime.now(ZONE).date() + timedelta(days=days_ahead)


def at(day: date, clock: str) -> str:
    """The RFC 3339 UTC instant of a local wall-clock time in the clinic."""
    local = datetime.combine(day, time.fromisoformat(clock), tzinfo=ZONE)
    return local.astimezone(UTC).isoformat().replace("+00:00", "Z")


def doctor_with_schedule(
    edge: Edge, admin: Person, *, hours=None, slot_minutes: int = 30, visits=None
) -> Person:
    doctor = edge.create_staff(admin, "DOCTOR", specialty="Testing", displayName=f"Dr. {admin.user_id[:6]}")
    until(
        lambda: edge.http.get(f"/v1/doctors/{doctor.user_id}", headers=admin.auth).status_code == 200,
        within=20,
        what="the doctor to reach the appointments directory",
    )
    reply = edge.http.patch(
        f"/v1/doctors/{doctor.user_id}/schedule",
        params={"update_mask": "slot_minutes,working_hours,visit_types"},
        json={"slotMinutes": slot_minutes, "workingHours": hours or ALL_DAY, "visitTypes": visits or VISITS},
        headers=admin.auth,
    )
    assert reply.status_code == 200, reply.text
    return doctor


def known_patient(edge: Edge, stack) -> Person:
    """A patient the appointments service already knows (its projection of user events)."""
    patient = edge.register_patient()
    url = stack.database_urls["appointments"]
    until(
        lambda: fetch(url, "SELECT 1 FROM patients WHERE id = $1::uuid", patient.user_id),
        within=20,
        what="the patient to reach the appointments service",
    )
    return patient


async def book_many(
    stack, doctors: list[str], tokens: list[str], *, per_patient: int, day: date, cancel_share: float = 0.0
) -> dict[str, bool]:
    """`per_patient` QUICK (5-minute) bookings per patient token straight to the appointments
    service, two doctors sharing the patients; a `cancel_share` of them cancelled right away.
    Returns appointment id -> cancelled."""
    outcome: dict[str, bool] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.services['appointments']}") as channel:
        stub = ap_rpc.AppointmentsServiceStub(channel)

        async def patient(i: int, token: str) -> None:
            metadata = [("authorization", f"Bearer {token}")]
            rng = random.Random(i)
            for k in range(per_patient):
                minute = ((i // len(doctors)) * per_patient + k) * 5
                appointment = resources_pb2.Appointment(
                    doctor_id=doctors[i % len(doctors)], visit_type="QUICK"
                )
                appointment.start_time.FromJsonString(at(day, f"{minute // 60:02}:{minute % 60:02}"))
                reply = await stub.CreateAppointment(
                    ap.CreateAppointmentRequest(appointment=appointment), metadata=metadata
                )
                cancel = rng.random() < cancel_share
                if cancel:
                    await stub.CancelAppointment(
                        ap.CancelAppointmentRequest(appointment_id=reply.appointment.id), metadata=metadata
                    )
                outcome[reply.appointment.id] = cancel

        await asyncio.gather(*(patient(i, token) for i, token in enumerate(tokens)))
    return outcome
