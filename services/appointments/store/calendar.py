"""Queries of the calendar: appointments and time off (`calendar_entries`), with the events
that go out with their changes. A write an exclusion constraint refuses raises `domain.Overlap`;
no database error leaves this package."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf.message import Message
from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from appointments.domain import Appointment, Overlap, TimeOff
from appointments.store.tables import (
    APPOINTMENT,
    BLOCKING,
    DOCTOR_BUSY,
    DOCTOR_OVERLAP,
    PATIENT_OVERLAP,
    TIME_OFF,
    calendar,
    metadata,
)
from clinic_platform.db import Database
from clinic_platform.errors import NotFound
from clinic_platform.idempotency import COLUMNS as KEY_COLUMNS
from clinic_platform.idempotency import IdempotencyKeys
from clinic_platform.outbox import COLUMNS as OUTBOX_COLUMNS
from clinic_platform.outbox import Outbox

# The booking: the retry key, the appointment and its AppointmentBooked event in ONE statement (one
# round trip, one implicit transaction), run on asyncpg directly. With a request_id the key is
# claimed first, storing the answer; a concurrent retry waits on it, and once it is committed
# inserts nothing (a rolled-back first attempt leaves the key free, so the retry books). Only the
# kit's constant column lists are interpolated.
BOOK = f"""
    WITH claimed AS (
        INSERT INTO idempotency_keys ({KEY_COLUMNS})
        SELECT $16, $17, $18, $19 WHERE $17::text IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING request_id
    ), booked AS (
        INSERT INTO calendar_entries
            (id, kind, doctor_id, patient_id, start_time, end_time, visit_type, status, reason,
             changed_by, version, create_time, update_time)
        SELECT $1, 'APPOINTMENT', $2, $3, $4, $5, $6, 'CONFIRMED', $7, $8, 1, $9, $9
        WHERE $17::text IS NULL OR EXISTS (SELECT FROM claimed)
        RETURNING id
    ), event AS (
        INSERT INTO outbox ({", ".join(OUTBOX_COLUMNS)})
        SELECT $10, $11, $12, $13, $14, $15 FROM booked
    )
    SELECT id FROM booked
"""  # noqa: S608
NO_RETRY_KEY = (None, None, None, None)

# How many confirmed visits a doctor has in a period: a write refused by the doctor's exclusion
# constraint hit a visit or time off. On asyncpg: a storm of refused bookings runs it.
VISITS_BETWEEN = """
    SELECT count(*) FROM calendar_entries WHERE doctor_id = $1 AND kind = 'APPOINTMENT'
    AND status IN ('CONFIRMED', 'COMPLETED') AND start_time < $3 AND end_time > $2
"""


def _overlap(error: IntegrityError) -> Overlap:
    """The Overlap an exclusion constraint reported (asyncpg names it); other errors go on."""
    constraint = getattr(getattr(error.orig, "__cause__", None), "constraint_name", "") or ""
    if constraint not in (DOCTOR_OVERLAP, PATIENT_OVERLAP):
        raise error
    return Overlap(patient=constraint == PATIENT_OVERLAP)


def _to_appointment(row) -> Appointment:
    return Appointment(**{name: row._mapping[name] for name in Appointment.__dataclass_fields__})


def _to_time_off(row) -> TimeOff:
    return TimeOff(**{name: row._mapping[name] for name in TimeOff.__dataclass_fields__})


def _after(table_start, table_id, after_start: Any, after_id: Any):
    """Keyset pagination over (start_time, id)."""
    return or_(table_start > after_start, and_(table_start == after_start, table_id > after_id))


class CalendarStore:
    """A change that reads, decides (domain.py) and writes runs its steps with the session of one
    `transaction()`; the rest opens its own connection."""

    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox
        self.keys = IdempotencyKeys(metadata)  # AIP-155 request_id keys, in this database

    def transaction(self):
        return self.db.transaction()

    # -- appointments -----------------------------------------------------------------------------
    async def book(self, appointment: Appointment, event: Message, retry_key: tuple | None) -> bool:
        """Books `appointment` with its event; False (nothing written) when `retry_key`, from
        `keys.values(...)`, was claimed before. Overlap when the slot is taken."""
        a = appointment
        event_row = self.outbox.values(event, aggregate_id=str(a.id))
        pool = await self.db.pool()
        try:
            booked = await pool.fetchval(
                BOOK, a.id, a.doctor_id, a.patient_id, a.start_time, a.end_time, a.visit_type, a.reason,
                a.changed_by, a.create_time, *event_row, *(retry_key or NO_RETRY_KEY),
            )  # fmt: skip
        except asyncpg.ExclusionViolationError as error:
            raise Overlap(patient=error.constraint_name == PATIENT_OVERLAP) from None
        if booked is None:
            return False
        self.db.events_written()
        return True

    async def earlier_answer(self, scope: str, request_id: str, request: Message, answer_type: type):
        """The answer stored with a retry key `book` found taken; None when it is gone."""
        pool = await self.db.pool()
        return await self.keys.earlier(pool, scope, request_id, request, answer_type, what="booking")

    async def visits_between(self, doctor_id: uuid.UUID, start: datetime, end: datetime) -> int:
        """The doctor's confirmed (or completed) visits overlapping the period."""
        return await (await self.db.pool()).fetchval(VISITS_BETWEEN, doctor_id, start, end)

    async def appointment(self, appointment_id: uuid.UUID) -> Appointment:
        async with self.db.sessions() as session:
            return await self._appointment(session, appointment_id)

    async def locked_appointment(self, session: AsyncSession, appointment_id: uuid.UUID) -> Appointment:
        """The appointment, locked until the transaction ends: changes to it take turns."""
        return await self._appointment(session, appointment_id, lock=True)

    async def _appointment(self, session: AsyncSession, appointment_id: uuid.UUID, *, lock=False):
        query = select(calendar).where(calendar.c.id == appointment_id, calendar.c.kind == APPOINTMENT)
        row = (await session.execute(query.with_for_update() if lock else query)).first()
        if row is None:
            raise NotFound(f"appointment {appointment_id} not found")
        return _to_appointment(row)

    async def save_move(self, session: AsyncSession, moved: Appointment, event: Message) -> None:
        """One UPDATE moves the appointment: the old slot is freed only if the new one is taken."""
        try:
            await session.execute(
                update(calendar)
                .where(calendar.c.id == moved.id)
                .values(
                    start_time=moved.start_time,
                    end_time=moved.end_time,
                    version=moved.version,
                    update_time=moved.update_time,
                    changed_by=moved.changed_by,
                )
            )
        except IntegrityError as error:
            raise _overlap(error) from None
        await self.outbox.add(session, event, aggregate_id=str(moved.id))

    async def save_status(self, session: AsyncSession, changed: Appointment, event: Message) -> None:
        await session.execute(
            update(calendar)
            .where(calendar.c.id == changed.id)
            .values(
                status=changed.status,
                version=changed.version,
                update_time=changed.update_time,
                changed_by=changed.changed_by,
                cancel_reason=changed.cancel_reason,
            )
        )
        await self.outbox.add(session, event, aggregate_id=str(changed.id))

    async def list_appointments(
        self,
        *,
        doctor_id: Any,
        patient_id: Any,
        start: datetime | None,
        end: datetime | None,
        status: str | None,
        after: list[str] | None,
        limit: int,
    ) -> list[Appointment]:
        query = select(calendar).where(calendar.c.kind == APPOINTMENT)
        if doctor_id:
            query = query.where(calendar.c.doctor_id == doctor_id)
        if patient_id:
            query = query.where(calendar.c.patient_id == patient_id)
        if start:
            query = query.where(calendar.c.start_time >= start)
        if end:
            query = query.where(calendar.c.start_time < end)
        if status:
            query = query.where(calendar.c.status == status)
        if after:
            query = query.where(
                _after(calendar.c.start_time, calendar.c.id, datetime.fromisoformat(after[0]), after[1])
            )
        query = query.order_by(calendar.c.start_time, calendar.c.id).limit(limit)
        async with self.db.engine.connect() as conn:
            return [_to_appointment(row) for row in await conn.execute(query)]

    async def busy_intervals(
        self, doctor_ids: list[Any], start: datetime, end: datetime
    ) -> dict[Any, list[tuple[datetime, datetime]]]:
        """Per doctor, the appointments and time off that overlap the period."""
        query = select(calendar.c.doctor_id, calendar.c.start_time, calendar.c.end_time).where(
            calendar.c.doctor_id.in_(doctor_ids),
            calendar.c.status.in_(DOCTOR_BUSY),
            calendar.c.start_time < end,
            calendar.c.end_time > start,
        )
        busy: dict[Any, list[tuple[datetime, datetime]]] = {d: [] for d in doctor_ids}
        async with self.db.engine.connect() as conn:
            for row in await conn.execute(query):
                busy[row.doctor_id].append((row.start_time, row.end_time))
        return busy

    # -- time off ---------------------------------------------------------------------------------
    async def add_time_off(
        self,
        session: AsyncSession,
        doctor_id: uuid.UUID,
        *,
        start: datetime,
        end: datetime,
        reason: str,
        by: str,
    ) -> TimeOff:
        """Overlap when the period overlaps the doctor's confirmed visits or other time off."""
        statement = insert(calendar).values(
            id=uuid.uuid4(),
            kind=TIME_OFF,
            doctor_id=doctor_id,
            start_time=start,
            end_time=end,
            status=BLOCKING,
            reason=reason,
            changed_by=by,
            version=1,
        )
        try:
            return _to_time_off((await session.execute(statement.returning(calendar))).one())
        except IntegrityError as error:
            raise _overlap(error) from None

    async def list_time_off(
        self, doctor_id: uuid.UUID, *, ending_after: datetime | None, after: list[str] | None, limit: int
    ) -> list[TimeOff]:
        query = select(calendar).where(calendar.c.doctor_id == doctor_id, calendar.c.kind == TIME_OFF)
        if ending_after:
            query = query.where(calendar.c.end_time > ending_after)
        if after:
            query = query.where(
                _after(calendar.c.start_time, calendar.c.id, datetime.fromisoformat(after[0]), after[1])
            )
        query = query.order_by(calendar.c.start_time, calendar.c.id).limit(limit)
        async with self.db.engine.connect() as conn:
            return [_to_time_off(row) for row in await conn.execute(query)]

    async def delete_time_off(self, doctor_id: uuid.UUID, time_off_id: uuid.UUID) -> bool:
        """False when the doctor has no such time off."""
        async with self.db.transaction() as session:
            deleted = await session.execute(
                delete(calendar).where(
                    calendar.c.id == time_off_id,
                    calendar.c.doctor_id == doctor_id,
                    calendar.c.kind == TIME_OFF,
                )
            )
        return deleted.rowcount > 0
