"""What people received: the local mailbox (SMTP) and the SMS/push provider simulator, read over
their HTTP APIs, and the notification service's delivery log."""

from __future__ import annotations

import random

import httpx

from tests.support.db import fetch
from tests.support.identity import Edge, Person
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
