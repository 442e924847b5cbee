"""Pruning what no one needs after a while, in the background: published outbox rows, processed
inbox rows, idempotency keys, and whatever a service adds (e.g. notification message bodies).

Each rule removes at most `batch_size` rows per statement and repeats until nothing is left, so it
never holds many locks or one long transaction beside the service's own work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clinic_platform.db import Database
from clinic_platform.periodic import run_every

log = logging.getLogger(__name__)

# prune(cutoff, limit) -> rows removed; removes only rows older than `cutoff`, at most `limit`.
Prune = Callable[[datetime, int], Awaitable[int]]


@dataclass(frozen=True)
class Rule:
    name: str
    prune: Prune
    max_age: timedelta


class Retention:
    def __init__(self, db: Database, *, every: timedelta, batch_size: int = 5000) -> None:
        self.db = db
        self.every = every
        self.batch_size = batch_size
        self.rules: list[Rule] = []
        self.pruned_total: dict[str, int] = {}

    def add(self, name: str, prune: Prune, max_age: timedelta) -> None:
        self.rules.append(Rule(name, prune, max_age))

    def add_statement(self, name: str, sql: str, max_age: timedelta) -> None:
        """A rule in SQL: `$1` is the cutoff time, `$2` the batch size; the statement's status
        (DELETE n / UPDATE n) says how many rows it touched."""

        async def prune(cutoff: datetime, limit: int) -> int:
            pool = await self.db.pool()
            status = await pool.execute(sql, cutoff, limit)
            return int(status.split()[-1])

        self.add(name, prune, max_age)

    def add_kit_rules(self, *, outbox: timedelta, inbox: timedelta, idempotency_keys: timedelta) -> None:
        self.add_statement(
            "outbox",
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
            " WHERE published_at < $1 ORDER BY published_at LIMIT $2)",
            outbox,
        )
        self.add_statement(
            "inbox",
            "DELETE FROM inbox WHERE event_id IN (SELECT event_id FROM inbox"
            " WHERE received_at < $1 ORDER BY received_at LIMIT $2)",
            inbox,
        )
        self.add_statement(
            "idempotency_keys",
            "DELETE FROM idempotency_keys WHERE (scope, request_id) IN (SELECT scope, request_id"
            " FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
            idempotency_keys,
        )

    async def prune_once(self, now: datetime | None = None) -> dict[str, int]:
        """Apply every rule until it finds nothing more; returns rows removed per rule."""
        now = now or datetime.now(UTC)
        removed: dict[str, int] = {}
        for rule in self.rules:
            count = 0
            while True:
                batch = await rule.prune(now - rule.max_age, self.batch_size)
                count += batch
                if batch < self.batch_size:
                    break
            removed[rule.name] = count
            self.pruned_total[rule.name] = self.pruned_total.get(rule.name, 0) + count
        if any(removed.values()):
            log.info("pruned old rows", extra={"removed": removed})
        return removed

    async def run(self, stopping: asyncio.Event) -> None:
        await run_every(self.every.total_seconds(), self.prune_once, stopping, failure="pruning failed")
