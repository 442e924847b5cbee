"""What the dispatcher reads and writes: notices fanned out into deliveries, deliveries claimed
with a lease and their results recorded, the source event of a failed one (for the DLQ), and the
retention of finished deliveries' texts."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from clinic_platform import outbox
from clinic_platform.db import Database
from notification.store.tables import deliveries, notices, recipients, source_events, templates

# Claims due deliveries for `lease` seconds on the database's clock (one clock for every replica).
# SKIP LOCKED passes over rows another replica is claiming; the outer conditions re-check a row
# whose claim committed meanwhile. Each claim's attempt number is new: the token results check.
CLAIM = text(
    "UPDATE deliveries SET next_attempt_time = now() + make_interval(secs => :lease),"
    " attempts = attempts + 1, update_time = now()"
    " WHERE id IN (SELECT id FROM deliveries WHERE status = 'PENDING' AND next_attempt_time <= now()"
    " ORDER BY next_attempt_time LIMIT :n FOR UPDATE SKIP LOCKED)"
    " AND status = 'PENDING' AND next_attempt_time <= now() RETURNING *"
)
# A delivery sent, only while the claim it was sent under ($2, its attempt number) is still the
# newest. Its own statement, before the outbox row, so the row is locked while the event is added.
RECORD_SENT = """
    UPDATE deliveries SET status = 'SENT', send_time = $3, update_time = $3, failure_reason = ''
    WHERE id = $1 AND attempts = $2 AND status = 'PENDING'
    RETURNING id
"""
# The outbox row of `Outbox.values()`, in the kit's column order (built from constants only).
_PLACEHOLDERS = ", ".join(f"${n}" for n in range(1, len(outbox.COLUMNS) + 1))
ADD_EVENT = f"INSERT INTO outbox ({', '.join(outbox.COLUMNS)}) VALUES ({_PLACEHOLDERS})"  # noqa: S608
# A subject is never empty before pruning (SMS and push take the clinic's name): it marks what is
# left to prune, and ix_deliveries_unpruned holds exactly those rows.
PRUNE_BODIES = text(
    "UPDATE deliveries SET subject = '', body = '', html = ''"
    " WHERE id IN (SELECT id FROM deliveries WHERE status IN ('SENT', 'FAILED') AND subject <> ''"
    " AND update_time < :older_than ORDER BY update_time LIMIT :n FOR UPDATE SKIP LOCKED)"
)


# -- the fan-out ------------------------------------------------------------------------------------
async def new_notices(session: AsyncSession, limit: int) -> list:
    """Up to `limit` NEW notices, oldest first, whose recipient is known, each with the recipient's
    columns; locked (other replicas skip them)."""
    return list(
        (
            await session.execute(
                select(notices, recipients)
                .join(recipients, recipients.c.id == notices.c.recipient_id)
                .where(notices.c.status == "NEW")
                .order_by(notices.c.create_time)
                .limit(limit)
                .with_for_update(of=notices, skip_locked=True)
            )
        ).all()
    )


async def templates_in_use(session: AsyncSession) -> dict[tuple[str, str], tuple[str, str]]:
    """(event type, channel) -> (subject, body) of every template."""
    rows = (await session.execute(select(templates))).all()
    return {(r.event_type, r.channel): (r.subject, r.body) for r in rows}


async def display_names(session: AsyncSession, people: set[str]) -> dict[str, str]:
    """Display names of the known people among `people` (user ids), in one query."""
    found = await session.execute(
        select(recipients.c.id, recipients.c.display_name).where(
            recipients.c.id.in_([uuid.UUID(i) for i in people])
        )
    )
    return {str(person_id): name for person_id, name in found}


async def add_deliveries(session: AsyncSession, notice_ids: list[uuid.UUID], rows: list[dict]) -> None:
    """The notices' deliveries (one already there is kept), and the notices marked EXPANDED."""
    if rows:
        await session.execute(insert(deliveries).values(rows).on_conflict_do_nothing())
    await session.execute(update(notices).where(notices.c.id.in_(notice_ids)).values(status="EXPANDED"))


async def abandon_notices(session: AsyncSession, created_before: datetime) -> None:
    """NEW notices created before then stop waiting for their person to become known."""
    await session.execute(
        update(notices)
        .where(notices.c.status == "NEW", notices.c.create_time < created_before)
        .values(status="ABANDONED")
    )


# -- sending ----------------------------------------------------------------------------------------
async def claim_due(db: Database, lease_seconds: float, limit: int) -> list:
    """Up to `limit` due deliveries, leased for `lease_seconds` (see CLAIM)."""
    async with db.transaction() as session:
        return list((await session.execute(CLAIM, {"lease": lease_seconds, "n": limit})).all())


async def record_sent(
    db: Database, delivery_id: uuid.UUID, attempts: int, now: datetime, event: tuple
) -> bool:
    """The delivery SENT with its event (`Outbox.values`), only while the claim it was sent under
    (`attempts`) is still the newest: False when it is not. On asyncpg: this runs once per message."""
    pool = await db.pool()
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(RECORD_SENT, delivery_id, attempts, now) is None:
            return False
        await conn.execute(ADD_EVENT, *event)
    db.events_written()
    return True


async def record_failure(
    session: AsyncSession,
    delivery_id: uuid.UUID,
    attempts: int,
    reason: str,
    now: datetime,
    *,
    retry_at: datetime | None,
) -> bool:
    """A failed attempt: to retry at `retry_at`, or FAILED for good when that is None; only while
    the claim it was sent under (`attempts`) is still the newest: False when it is not."""
    values = {"failure_reason": reason, "update_time": now}
    values |= {"status": "FAILED"} if retry_at is None else {"next_attempt_time": retry_at}
    recorded = await session.execute(
        update(deliveries)
        .where(
            deliveries.c.id == delivery_id,
            deliveries.c.attempts == attempts,
            deliveries.c.status == "PENDING",
        )
        .values(**values)
    )
    return bool(recorded.rowcount)


async def source_event(db: Database, event_id: uuid.UUID):
    """The kept source event, or None (a reminder's deliveries have none)."""
    async with db.engine.connect() as conn:
        return (await conn.execute(select(source_events).where(source_events.c.event_id == event_id))).first()


# -- retention --------------------------------------------------------------------------------------
async def prune_bodies(db: Database, older_than: datetime, limit: int) -> int:
    """Blank the texts of up to `limit` deliveries finished before `older_than`; how many it did."""
    async with db.transaction() as session:
        pruned = await session.execute(PRUNE_BODIES, {"older_than": older_than, "n": limit})
    return pruned.rowcount
