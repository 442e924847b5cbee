"""Queries of the doctor directory, the known patients and the doctors' weekly templates.

Doctors and patients are projected from user_management's events (consumers.py), so booking works
while user_management is down. Events may come twice or out of order: a row keeps the newest user
version it applied and ignores older ones."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.ext.asyncio import AsyncSession

from appointments.domain import Doctor, DoctorCalendar, Schedule, VisitType, WorkingHours
from appointments.store.tables import doctors, patients, schedules
from clinic_platform.db import Database


class DirectoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_doctors(self, specialty: str, after: list[Any] | None, limit: int) -> list[Doctor]:
        """Active doctors by name (of one specialty, when given), after the page's last one."""
        query = select(doctors).where(doctors.c.active)
        if specialty:
            query = query.where(func.lower(doctors.c.specialty) == specialty.strip().lower())
        if after:
            query = query.where(
                (doctors.c.display_name > after[0])
                | ((doctors.c.display_name == after[0]) & (doctors.c.id > after[1]))
            )
        query = query.order_by(doctors.c.display_name, doctors.c.id).limit(limit)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Doctor(r.id, r.display_name, r.specialty) for r in rows]

    async def doctor_calendar(self, doctor_id: uuid.UUID) -> DoctorCalendar | None:
        """The doctor's directory entry and template; None for an unknown doctor."""
        async with self.db.engine.connect() as conn:
            doctor = (await conn.execute(select(doctors).where(doctors.c.id == doctor_id))).first()
            if doctor is None:
                return None
            row = (await conn.execute(select(schedules).where(schedules.c.doctor_id == doctor_id))).first()
        return DoctorCalendar(
            doctor.id, doctor.display_name, doctor.specialty, doctor.active, _schedule(doctor.id, row)
        )

    async def active_doctor_ids(self, specialty: str) -> list[uuid.UUID]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                select(doctors.c.id)
                .where(doctors.c.active, func.lower(doctors.c.specialty) == specialty.strip().lower())
                .order_by(doctors.c.id)
            )
            return [r.id for r in rows]

    async def save_schedule(self, schedule: Schedule, now: datetime) -> datetime:
        """Replaces the doctor's weekly template; returns its update time."""
        values = {
            "slot_minutes": schedule.slot_minutes,
            "working_hours": [
                {"weekday": h.weekday, "start": h.start.strftime("%H:%M"), "end": h.end.strftime("%H:%M")}
                for h in schedule.working_hours
            ],
            "visit_types": [
                {"code": v.code, "name": v.name, "duration_minutes": v.duration_minutes}
                for v in schedule.visit_types
            ],
            "update_time": now,
        }
        statement = upsert(schedules).values(doctor_id=uuid.UUID(schedule.doctor_id), version=1, **values)
        async with self.db.transaction() as session:
            return await session.scalar(
                statement.on_conflict_do_update(
                    index_elements=["doctor_id"], set_={**values, "version": schedules.c.version + 1}
                ).returning(schedules.c.update_time)
            )

    async def patient_is_active(self, patient_id: uuid.UUID) -> bool:
        async with self.db.engine.connect() as conn:
            return bool(await conn.scalar(select(patients.c.active).where(patients.c.id == patient_id)))


def _schedule(doctor_id: uuid.UUID, row) -> Schedule:
    if row is None:  # no template yet: no working hours
        return Schedule(str(doctor_id))
    hours = tuple(
        WorkingHours(h["weekday"], time.fromisoformat(h["start"]), time.fromisoformat(h["end"]))
        for h in row.working_hours
    )
    visits = tuple(VisitType(v["code"], v["name"], v["duration_minutes"]) for v in row.visit_types)
    return Schedule(str(doctor_id), row.slot_minutes, hours, visits, row.version)


# -- the user projection (consumers.py), in the consumer's transaction ----------------------------
async def save_doctor(
    session: AsyncSession,
    user_id: uuid.UUID,
    version: int,
    *,
    display_name: str,
    specialty: str,
    active: bool,
) -> None:
    values = {"display_name": display_name, "specialty": specialty, "active": active}
    await _upsert(session, doctors, {"id": user_id, **values, "user_version": version})


async def save_patient(session: AsyncSession, user_id: uuid.UUID, version: int, *, active: bool) -> None:
    await _upsert(session, patients, {"id": user_id, "active": active, "user_version": version})


async def retire_doctor(session: AsyncSession, user_id: uuid.UUID, version: int) -> None:
    await _retire(session, doctors, user_id, version)


async def retire_patient(session: AsyncSession, user_id: uuid.UUID, version: int) -> None:
    await _retire(session, patients, user_id, version)


async def _upsert(session: AsyncSession, table: Table, values: dict) -> None:
    statement = upsert(table).values(**values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"],
            set_={k: statement.excluded[k] for k in values if k != "id"},
            where=table.c.user_version < statement.excluded.user_version,
        )
    )


async def _retire(session: AsyncSession, table: Table, user_id: uuid.UUID, version: int) -> None:
    await session.execute(
        update(table)
        .where(table.c.id == user_id, table.c.user_version < version)
        .values(active=False, user_version=version)
    )
