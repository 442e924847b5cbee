"""Open slots for a search over one doctor or a specialty: how long the wanted visit is with each
doctor searched, and their free slots merged in time order. Pure rules, like domain.py."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from zoneinfo import ZoneInfo

from appointments.domain import Busy, DoctorCalendar, Slot, free_slots


def visit_lengths(
    calendars: list[DoctorCalendar], visit_type: str, *, one_doctor: bool
) -> dict[uuid.UUID, int]:
    """Minutes of the wanted visit per doctor (a slot when no visit type is asked). A search by
    specialty leaves out the doctors who do not offer the visit; asking one doctor for a visit they
    do not offer is an error."""
    lengths = {}
    for calendar in calendars:
        schedule = calendar.schedule
        if not visit_type:
            lengths[calendar.doctor_id] = schedule.slot_minutes
        elif one_doctor or any(v.code == visit_type for v in schedule.visit_types):
            lengths[calendar.doctor_id] = schedule.visit_type(visit_type).duration_minutes
    return lengths


def open_slots(
    calendars: list[DoctorCalendar],
    lengths: dict[uuid.UUID, int],
    busy: dict[uuid.UUID, list[tuple[datetime, datetime]]],
    days: list[date],
    zone: ZoneInfo,
    *,
    now: datetime,
    after: tuple[datetime, str] | None,
) -> list[Slot]:
    """The free slots of the doctors in `lengths` by start, then doctor; those after `after` (the
    previous page's last start and doctor) only."""
    slots = sorted(
        (
            slot
            for calendar in calendars
            if calendar.doctor_id in lengths
            for slot in free_slots(
                calendar.schedule,
                days,
                zone,
                Busy(busy[calendar.doctor_id]),
                duration_minutes=lengths[calendar.doctor_id],
                now=now,
            )
        ),
        key=lambda s: (s.start, s.doctor_id),
    )
    if after:
        slots = [s for s in slots if (s.start, s.doctor_id) > after]
    return slots
