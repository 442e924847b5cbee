"""What the event handlers write, in the consumer's inbox transaction: the recipients projection,
the reminder schedule and notices; and the reminders that fall due (the dispatcher's round)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from clinic_platform.db import raw_connection
from notification.store.tables import recipients, reminders


class SourceEvent(NamedTuple):
    """The event a notice comes from, kept to hand it to the DLQ if its messages fail for good."""

    topic: str
    event_type: str
    key: str
    payload: bytes
    time: datetime | None


_NO_SOURCE = (None,) * len(SourceEvent._fields)  # a reminder: no event of anyone else's to keep

# The consumer's hot statements run on asyncpg: SQLAlchemy's async layer costs several times the
# CPU of a short statement.

# A notice, and the source event kept beside it for the DLQ (not for reminders: $6 is NULL).
NOTICE = """
    WITH noticed AS (
        INSERT INTO notices (id, source_event_id, recipient_id, event_type, variables, status)
        VALUES ($1, $2, $3, $4, $5::jsonb, 'NEW')
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    INSERT INTO source_events (event_id, topic, event_type, aggregate_key, payload, event_time)
    SELECT $2, $6, $7, $8, $9, $10 FROM noticed WHERE $6::text IS NOT NULL
    ON CONFLICT DO NOTHING
"""

# An appointment event in one statement. Unless an event as new was applied already ("fresh"):
# what was scheduled is cancelled; a confirmed future time ($3) gets a new SCHEDULED reminder,
# anything else leaves the newest row remembering this version (the first event of an appointment
# inserts a CANCELLED row for that); and the patient gets a notice when there is a message ($13).
APPOINTMENT_EVENT = """
    WITH newest AS (
        SELECT id, appointment_version FROM reminders WHERE appointment_id = $1
        ORDER BY appointment_version DESC LIMIT 1 FOR UPDATE
    ), fresh AS (
        SELECT NOT EXISTS (SELECT 1 FROM newest WHERE appointment_version >= $2) AS yes
    ), changed AS (
        UPDATE reminders SET
            status = CASE WHEN status = 'SCHEDULED' THEN 'CANCELLED' ELSE status END,
            appointment_version = CASE
                WHEN id = (SELECT id FROM newest) AND NOT $3 THEN $2 ELSE appointment_version END,
            update_time = $4
        WHERE appointment_id = $1 AND (SELECT yes FROM fresh)
          AND (status = 'SCHEDULED' OR (id = (SELECT id FROM newest) AND NOT $3))
    ), scheduled AS (
        INSERT INTO reminders (id, appointment_id, patient_id, doctor_id, visit_type,
                               appointment_start_time, send_time, status, appointment_version)
        SELECT $5, $1, $6, $7, $8, $9, $10, CASE WHEN $3 THEN 'SCHEDULED' ELSE 'CANCELLED' END, $2
        WHERE (SELECT yes FROM fresh) AND ($3 OR NOT EXISTS (SELECT 1 FROM newest))
    ), noticed AS (
        INSERT INTO notices (id, source_event_id, recipient_id, event_type, variables, status)
        SELECT $11, $12, $6, $13, $14::jsonb, 'NEW' WHERE (SELECT yes FROM fresh) AND $13::text IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING id
    ), kept AS (
        INSERT INTO source_events (event_id, topic, event_type, aggregate_key, payload, event_time)
        SELECT $12, $15, $16, $17, $18, $19 FROM noticed
        ON CONFLICT DO NOTHING
    )
    SELECT yes FROM fresh
"""


async def save_recipient(session: AsyncSession, values: dict) -> None:
    """The person's contact details and channel choices, unless a newer user version is kept."""
    statement = insert(recipients).values(**values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"],
            set_={k: statement.excluded[k] for k in values if k != "id"},
            where=recipients.c.user_version < statement.excluded.user_version,
        )
    )


async def deactivate_recipient(session: AsyncSession, user_id: uuid.UUID, user_version: int) -> None:
    await session.execute(
        update(recipients)
        .where(recipients.c.id == user_id, recipients.c.user_version < user_version)
        .values(active=False, user_version=user_version)
    )


async def apply_appointment_event(
    session: AsyncSession,
    *,
    appointment_id: uuid.UUID,
    version: int,
    schedule: bool,
    now: datetime,
    patient_id: uuid.UUID,
    doctor_id: uuid.UUID,
    visit_type: str,
    start: datetime,
    send_time: datetime,
    event_id: uuid.UUID,
    message: str | None,
    variables: dict,
    source: SourceEvent,
) -> None:
    """The reminder schedule and the patient's notice (`message`, None for none) of one
    appointment event, in one statement (APPOINTMENT_EVENT)."""
    conn = await raw_connection(session)
    await conn.fetchval(
        APPOINTMENT_EVENT,
        appointment_id,
        version,
        schedule,
        now,
        uuid.uuid4(),
        patient_id,
        doctor_id,
        visit_type,
        start,
        send_time,
        uuid.uuid4(),
        event_id,
        message,
        json.dumps(variables),
        *source,
    )


async def add_notice(
    session: AsyncSession,
    *,
    source_event_id: uuid.UUID,
    recipient_id: uuid.UUID,
    event_type: str,
    variables: dict,
    source: SourceEvent | None,
) -> None:
    """Note that the recipient must hear about this event (once: a repeat changes nothing), with
    the source event beside it (None for a reminder)."""
    conn = await raw_connection(session)
    await conn.execute(
        NOTICE,
        uuid.uuid4(),
        source_event_id,
        recipient_id,
        event_type,
        json.dumps(variables),
        *(source or _NO_SOURCE),
    )


async def active_admins(session: AsyncSession) -> list[uuid.UUID]:
    """The admins known and active now (who review emergency access to charts)."""
    found = await session.execute(
        select(recipients.c.id).where(recipients.c.role == "ADMIN", recipients.c.active.is_(True))
    )
    return list(found.scalars())


async def due_reminders(session: AsyncSession, now: datetime, limit: int) -> list:
    """Up to `limit` SCHEDULED reminders due by `now`, locked (other replicas skip them)."""
    return list(
        (
            await session.execute(
                select(reminders)
                .where(reminders.c.status == "SCHEDULED", reminders.c.send_time <= now)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )


async def close_reminder(session: AsyncSession, reminder_id: uuid.UUID, status: str, now: datetime) -> None:
    await session.execute(
        update(reminders).where(reminders.c.id == reminder_id).values(status=status, update_time=now)
    )
