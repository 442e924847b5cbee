"""Doctors' directory entries and weekly templates, read through a short-lived cache.

Booking checks the template in memory, so a booking is one statement. A template or directory
change reaches other replicas within `ttl_seconds`; a booking accepted in that window is as if
it came just before the change, which the rules allow (booked appointments stay when hours
change). The database's exclusion constraint, not this cache, decides overlaps and time off."""

from __future__ import annotations

import time
import uuid

from appointments.domain import DoctorCalendar
from appointments.store.directory import DirectoryStore
from clinic_platform.errors import NotFound


class Calendars:
    def __init__(self, directory: DirectoryStore, ttl_seconds: float = 5.0) -> None:
        self.directory = directory
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
        calendar = await self.directory.doctor_calendar(doctor_id)
        if calendar is not None:
            self._cache[doctor_id] = (time.monotonic() + self.ttl_seconds, calendar)
        return calendar

    async def of_specialty(self, specialty: str) -> list[DoctorCalendar]:
        return [await self.get(doctor_id) for doctor_id in await self.directory.active_doctor_ids(specialty)]
