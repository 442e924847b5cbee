"""The queries of NotificationService's RPCs (the delivery log, templates, reminders), and the
default templates seeded at start."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import insert

from clinic_platform.db import Database
from clinic_platform.pagination import Page, newest_first
from notification.store.tables import deliveries, reminders, templates


async def _rows(db: Database, query) -> list:
    async with db.engine.connect() as conn:
        return list((await conn.execute(query)).all())


def _matching(table, filters: dict) -> list:
    """Equality conditions for the filters that are set."""
    return [table.c[name] == value for name, value in filters.items() if value]


# -- the delivery log -------------------------------------------------------------------------------
async def list_notifications(db: Database, page: Page, filters: dict) -> list:
    """A page of deliveries matching `filters` (+1 row), newest first: read with `newest_first_key`."""
    return await _rows(db, newest_first(deliveries, page, *_matching(deliveries, filters)))


async def get_notification(db: Database, notification_id: uuid.UUID):
    """The delivery, or None."""
    found = await _rows(db, select(deliveries).where(deliveries.c.id == notification_id))
    return found[0] if found else None


# -- templates --------------------------------------------------------------------------------------
async def list_templates(db: Database, page: Page, filters: dict) -> list:
    """A page of templates matching `filters` (+1 row), by (event type, channel)."""
    query = select(templates).where(*_matching(templates, filters))
    if page.after:
        query = query.where(tuple_(templates.c.event_type, templates.c.channel) > tuple_(*page.after))
    return await _rows(db, query.order_by(templates.c.event_type, templates.c.channel).limit(page.size + 1))


async def get_template(db: Database, template_id: uuid.UUID):
    """The template, or None."""
    found = await _rows(db, select(templates).where(templates.c.id == template_id))
    return found[0] if found else None


async def update_template(db: Database, template_id: uuid.UUID, changes: dict, now: datetime):
    """The template with `changes` (subject, body) applied, as it is now."""
    async with db.transaction() as session:
        return (
            await session.execute(
                update(templates)
                .where(templates.c.id == template_id)
                .values(**changes, update_time=now)
                .returning(templates)
            )
        ).one()


async def seed_templates(db: Database, defaults: Iterable[tuple[str, str, str, str]]) -> None:
    """A template row for each (event type, channel, subject, body) of `defaults` that has none."""
    rows = [
        {"id": uuid.uuid4(), "event_type": event_type, "channel": channel, "subject": subject, "body": body}
        for event_type, channel, subject, body in defaults
    ]
    async with db.transaction() as session:
        await session.execute(insert(templates).values(rows).on_conflict_do_nothing())


# -- reminders --------------------------------------------------------------------------------------
async def list_reminders(db: Database, page: Page, filters: dict) -> list:
    """A page of reminders matching `filters` (+1 row), by (send time, id)."""
    query = select(reminders).where(*_matching(reminders, filters))
    if page.after:
        after = (datetime.fromisoformat(page.after[0]), page.after[1])
        query = query.where(tuple_(reminders.c.send_time, reminders.c.id) > tuple_(*after))
    return await _rows(db, query.order_by(reminders.c.send_time, reminders.c.id).limit(page.size + 1))
