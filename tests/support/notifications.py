"""What people received: the local mailbox (SMTP) and the SMS/push provider simulator, read over
their HTTP APIs, and the notification service's delivery log; and the dispatcher (Notifier) run
inside a test, on a database of its own, sending through the same mailbox and simulator."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from sqlalchemy import Row, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from clinic.notification.v1 import events_pb2
from clinic_platform.db import Database
from clinic_platform.outbox import Outbox
from notification import store
from notification.channels import Email, provider_channels
from notification.dispatcher import Notifier
from notification.domain import NotifierSettings
from tests.support.db import fetch
from tests.support.identity import Edge, Person
from tests.support.kit import KitDatabase
from tests.support.polling import until


def unique_phone() -> str:
    return "+4915" + "".join(random.choices("0123456789", k=9))


def mail(stack, address: str, subject: str = "") -> list[dict]:
    """Messages the mailbox holds for `address` whose subject contains `subject`, oldest first."""
    reply = httpx.get(f"http://127.0.0.1:{stack.ports.mailbox}/messages", params={"to": address}, timeout=10)
    reply.raise_for_status()
    return [m for m in reply.json()["messages"] if subject in m["subject"]]


def texts(stack, phone: str, containing: str = "") -> list[dict]:
    """Text messages the SMS provider delivered to `phone` containing `containing`."""
    reply = httpx.get(f"http://127.0.0.1:{stack.ports.messaging}/messages", params={"to": phone}, timeout=10)
    reply.raise_for_status()
    return [m for m in reply.json()["messages"] if m["kind"] == "sms" and containing in m["text"]]


def wait_for_mail(stack, address: str, subject: str, count: int = 1, within: float = 30) -> list[dict]:
    return until(
        lambda: (found := mail(stack, address, subject)) and len(found) >= count and found,
        within=within,
        what=f"{count} message(s) '{subject}' to {address}",
    )


def messaging_faults(stack, **faults) -> None:
    reply = httpx.post(f"http://127.0.0.1:{stack.ports.messaging}/_faults", json=faults, timeout=10)
    reply.raise_for_status()


def deliveries(stack, recipient_id: str, event_type: str | None = None) -> list:
    """The delivery log rows of a person (channel, status, attempts, event_type, source_event_id)."""
    query = (
        "SELECT channel, status, attempts, event_type, source_event_id::text, failure_reason"
        " FROM deliveries WHERE recipient_id = $1::uuid"
    )
    rows = fetch(stack.database_urls["notification"], query, recipient_id)
    return [r for r in rows if event_type is None or r["event_type"] == event_type]


def known_recipient(edge: Edge, stack, person: Person, mentioning: str = "") -> None:
    """Wait until the notification service's projection knows the person (and preferences mentioning
    `mentioning`, e.g. a channel just opted out of)."""
    url = stack.database_urls["notification"]

    def known():
        rows = fetch(url, "SELECT preferences FROM recipients WHERE id = $1::uuid", person.user_id)
        return rows and (not mentioning or mentioning in rows[0]["preferences"])

    until(known, within=20, what="the person to reach the notification service")


# -- the dispatcher run in the test, on a database of its own ------------------------------------------
@contextlib.asynccontextmanager
async def notification_database(stack) -> AsyncIterator[str]:
    """A fresh database with the notification service's tables; yields its URL."""
    database = await KitDatabase(stack.postgres_admin_url, stack.ports.postgres).create_empty()
    engine = create_async_engine(database.url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(store.metadata.create_all)
        await engine.dispose()
        yield database.url
    finally:
        await database.drop()


def email_channel(port: int, timeout: float = 30.0) -> Email:
    return Email(
        host="127.0.0.1",
        port=port,
        start_tls=False,
        username="",
        password="",
        sender="Clinic Mesh <no-reply@clinic.example>",
        timeout=timeout,
    )


@contextlib.asynccontextmanager
async def notifier(stack, url: str, **settings) -> AsyncIterator[Notifier]:
    """A Notifier (one replica: its own connection pool) on the database at `url`, sending through
    the stack's mailbox and SMS/push simulator; `settings` override NotifierSettings."""
    http, providers = provider_channels(f"http://127.0.0.1:{stack.ports.messaging}", timeout=30.0)
    defaults = {"retry_base_seconds": 0.05, "poll_seconds": 0.05}
    replica = Notifier(
        Database(url, store.metadata, pool_size=4),
        Outbox(store.metadata, "clinic.notification.v1.events"),
        {"EMAIL": email_channel(stack.ports.smtp), **providers},
        NotifierSettings("Test Clinic", "Europe/Berlin", timedelta(hours=24), **(defaults | settings)),
        bootstrap=stack.kafka_bootstrap,
    )
    try:
        yield replica
    finally:
        await replica.db.close()
        await http.aclose()


async def add_deliveries(db: Database, *recipients: tuple[str, str]) -> list[uuid.UUID]:
    """PENDING deliveries, due now, one per (channel, address), each with a text of its own."""
    rows = [
        {
            "id": uuid.uuid4(),
            "notice_id": uuid.uuid4(),
            "source_event_id": uuid.uuid4(),  # no source event kept: nothing goes to a DLQ
            "recipient_id": uuid.uuid4(),
            "channel": channel,
            "event_type": "APPOINTMENT_BOOKED",
            "address": address,
            "subject": f"Test message {n} {uuid.uuid4().hex[:8]}",
            "body": f"Test message {n}",
            "html": "<p>Test message</p>" if channel == "EMAIL" else "",
            "status": "PENDING",
        }
        for n, (channel, address) in enumerate(recipients)
    ]
    async with db.transaction() as session:
        await session.execute(insert(store.deliveries), rows)
    return [row["id"] for row in rows]


async def delivery_rows(db: Database) -> dict[uuid.UUID, Row]:
    async with db.engine.connect() as conn:
        return {row.id: row for row in await conn.execute(select(store.deliveries))}


async def outbox_events(db: Database) -> list[tuple[str, str]]:
    """(event type, notification id) of every event the notifier wrote to its outbox."""
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT event_type, payload FROM outbox ORDER BY id"))).all()
    kinds = {
        "clinic.notification.v1.NotificationSent": events_pb2.NotificationSent,
        "clinic.notification.v1.NotificationFailed": events_pb2.NotificationFailed,
    }
    return [
        (r.event_type.rsplit(".", 1)[1], kinds[r.event_type].FromString(r.payload).notification_id)
        for r in rows
    ]
