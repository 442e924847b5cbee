"""Doctors' directory entries and weekly templates, read through a short-lived cache.

Booking checks the template in memory, so a booking is one statement. A template or directory
change reaches other replicas within `ttl_seconds`; a booking accepted in that window is as if
it came just before the change, which the rules allow (booked appointments stay when hours
change). The database's exclusion constraint, not this cache, decides overlaps and time off."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import time as clock

from sqlalchemy import func, select

from appointments import store
from appointments.domain import Schedule, VisitType, WorkingHours
from clinic_platform.db import Database
from clinic_platform.errors import NotFound

DEFAULT_SLOT_MINUTES = 30


@dataclass(frozen=True)
class DoctorCalendar:
    doctor_id: uuid.UUID
    display_name: str
    specialty: str
    active: bool
    schedule: Schedule


def schedule_from_row(doctor_id: uuid.UUID, row) -> Schedule:
    if row is None:
        return Schedule(str(doctor_id), DEFAULT_SLOT_MINUTES)
    hours = tuple(
        WorkingHours(h["weekday"], clock.fromisoformat(h["start"]), clock.fromisoformat(h["end"]))
        for h in row.working_hours
    )
    visits = tuple(VisitType(v["code"], v["name"], v["duration_minutes"]) for v in row.visit_types)
    return Schedule(str(doctor_id), row.slot_minutes, hours, visits, row.version)


class Calendars:
    def __init__(self, db: Database, ttl_seconds: float = 5.0) -> None:
        self.db = db
        self.ttl_seconds = ttl_seconds
        self._cache: dict[uuid.UUID, tuple[float, DoctorCalendar]] = {}

    async def get(self, doctor_id: uuid.UUID, *, field: str = "doctor_id") -> DoctorCalendar:
        """The doctor's calendar; NotFound for an unknown or deactivated doctor."""
        cached = self._cache.get(doctor_id)
        if cached and cached[0] > time.monotonic():
            calendar = cached[1]
        else:
            calendar = await self._load(doctor_id)
        if calendar is None or not calendar.active:
            raise NotFound(f"doctor {doctor_id} not found")
        return calendar

    def forget(self, doctor_id: uuid.UUID) -> None:
        self._cache.pop(doctor_id, None)

    async def _load(self, doctor_id: uuid.UUID) -> DoctorCalendar | None:
        async with self.db.engine.connect() as conn:
            doctor = (
                await conn.execute(select(store.doctors).where(store.doctors.c.id == doctor_id))
            ).first()
            if doctor is None:
                return None
            row = (
                await conn.execute(select(store.schedules).where(store.schedules.c.doctor_id == doctor_id))
            ).first()
        calendar = DoctorCalendar(
            doctor.id, doctor.display_name, doctor.specialty, doctor.active, schedule_from_row(doctor.id, row)
        )
        self._cache[doctor_id] = (time.monotonic() + self.ttl_seconds, calendar)
        return calendar

    async def of_specialty(self, specialty: str) -> list[DoctorCalendar]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                select(store.doctors.c.id)
                .where(
                    store.doctors.c.active, func.lower(store.doctors.c.specialty) == specialty.strip().lower()
                )
                .order_by(store.doctors.c.id)
            )
            ids = [r.id for r in rows]
        return [await self.get(doctor_id) for doctor_id in ids]
