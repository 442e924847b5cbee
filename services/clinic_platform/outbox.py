"""The transactional outbox: events are written in the business transaction and published by a
relay, so nothing is published for a rollback and nothing committed is lost while Kafka is down.

Writing: `Outbox.add(session, event, aggregate_id=...)` inside the service's transaction, or
`Outbox.row(...)` to embed the insert in a single statement (a CTE) on a hot path.

Publishing: `OutboxRelay.run()` claims unpublished rows in id order (`FOR UPDATE SKIP LOCKED`),
produces them with an idempotent producer (acks=all), waits for every delivery report and marks
the delivered prefix published. A transaction-scoped advisory lock lets one relay replica work
at a time, which is what keeps events of one aggregate in order across replicas. On failure it
backs off and tries again; a repeat carries the same `ce_id`, so consumers drop the duplicate.

The memory-only local broker forgets everything when it restarts. The relay remembers the broker's
cluster id; when a different (new) broker answers, it republishes the events of the replay window,
which idempotent consumers absorb. Against a real Kafka cluster the id never changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from confluent_kafka import KafkaException, Producer
from google.protobuf.message import Message
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.schema import MetaData

from clinic_platform import events
from clinic_platform.context import current_request_id
from clinic_platform.db import Database
from clinic_platform.kafka import DELIVERY_TIMEOUT_MS, ensure_topics, producer_config
from clinic_platform.wakeup import Wakeup

log = logging.getLogger(__name__)


class Outbox:
    """Writes a service's events into its outbox table."""

    def __init__(self, metadata: MetaData, topic: str) -> None:
        self.table = metadata.tables["outbox"]
        self.topic = topic

    def row(self, event: Message, *, aggregate_id: str, event_id: uuid.UUID | None = None) -> dict[str, Any]:
        return {
            "event_id": event_id or uuid.uuid4(),
            "topic": self.topic,
            "event_type": event.DESCRIPTOR.full_name,
            "aggregate_id": aggregate_id,
            "payload": event.SerializeToString(),
            "request_id": current_request_id(),
        }

    async def add(self, session: AsyncSession, event: Message, *, aggregate_id: str) -> uuid.UUID:
        values = self.row(event, aggregate_id=aggregate_id)
        await session.execute(insert(self.table).values(**values))
        session.info["wrote_events"] = True
        return values["event_id"]


class BrokerUnavailable(Exception):
    pass


# One relay at a time per database; the key is any stable 64-bit number.
RELAY_LOCK_KEY = zlib.crc32(b"clinic.outbox.relay")


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        *,
        bootstrap: str,
        service: str,
        topics_to_create: list[str] | None = None,
        partitions: int = 3,
        batch_size: int = 500,
        idle_poll_seconds: float = 1.0,
        linger_seconds: float = 0.005,
        broker_check_seconds: float = 5.0,
        replay_window: timedelta = timedelta(days=7),
        one_record_per_batch: bool = True,
    ) -> None:
        self.db = db
        self.bootstrap = bootstrap
        self.source = events.source_for(service)
        self.topics_to_create = topics_to_create or []
        self.partitions = partitions
        self.batch_size = batch_size
        self.idle_poll_seconds = idle_poll_seconds
        self.linger_seconds = linger_seconds
        self.broker_check_seconds = broker_check_seconds
        self.replay_window = replay_window
        self._producer_config = producer_config(
            bootstrap, f"{service}-outbox-relay", one_record_per_batch=one_record_per_batch
        )
        self.producer = Producer(self._producer_config)
        self._producer_failed = False
        self._wakeup = Wakeup()
        self._broker_checked_at = 0.0
        self.published_total = 0
        self.last_error: str | None = None  # why the last attempt failed; None once it succeeds

    def wake(self) -> None:
        """Called after a transaction that wrote events commits."""
        self._wakeup.ring()

    async def run(self, stopping: asyncio.Event) -> None:
        delay = 0.1
        failing_since: float | None = None
        while not stopping.is_set():
            try:
                published = await self.publish_batch()
            except Exception as exc:
                # Broker or database down: nothing is lost, the rows stay unpublished.
                self.last_error = str(exc)
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("outbox relay cannot publish yet, retrying", extra={"error": str(exc)})
                self._broker_checked_at = 0.0  # the broker may come back as a new instance
                await _sleep_unless(stopping, delay)
                delay = min(delay * 2, 5.0)
                continue
            self.last_error = None
            if failing_since is not None:
                log.info(
                    "outbox relay recovered",
                    extra={"after_seconds": round(time.monotonic() - failing_since, 1)},
                )
                failing_since, delay = None, 0.1
            if published < self.batch_size:
                await self._wait_for_work(stopping)

    async def close(self) -> None:
        await asyncio.to_thread(self.producer.flush, DELIVERY_TIMEOUT_MS / 1000)

    async def publish_batch(self) -> int:
        """Publish up to batch_size events; returns how many were published."""
        failure: str | None = None
        pool = await self.db.pool()
        async with pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RELAY_LOCK_KEY):
                return 0  # another replica is publishing
            await self._check_broker(conn)
            rows = await conn.fetch(
                "SELECT id, event_id, topic, event_type, aggregate_id, payload, request_id, occurred_at "
                "FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch_size,
            )
            if not rows:
                return 0
            if self._producer_failed:
                # After a failed delivery start a fresh producer: an idempotent producer facing a
                # new broker instance retries forever with a producer id that broker never issued.
                self.producer = Producer(self._producer_config)
                self._producer_failed = False
            errors = await asyncio.to_thread(self._deliver, rows)
            delivered = []
            for row, error in zip(rows, errors, strict=True):
                if error is not None:  # keep order: stop at the first failure, retry from there
                    failure = str(error)
                    break
                delivered.append(row["id"])
            if delivered:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", delivered
                )
        self.published_total += len(delivered)
        if failure:
            raise BrokerUnavailable(f"{len(rows) - len(delivered)} events not delivered: {failure}")
        return len(delivered)

    def _deliver(self, rows: list[Any]) -> list[Any]:
        """Produce rows in order and wait for every delivery report (runs in a worker thread)."""
        errors: list[Any] = ["not reported"] * len(rows)

        def report(index: int):
            def callback(err, _msg) -> None:
                errors[index] = err

            return callback

        for index, row in enumerate(rows):
            headers, key, value = events.encode(
                event_id=str(row["event_id"]),
                event_type=row["event_type"],
                source=self.source,
                time=row["occurred_at"],
                key=row["aggregate_id"],
                payload=row["payload"],
                request_id=row["request_id"],
            )
            try:
                self.producer.produce(row["topic"], value, key, headers=headers, on_delivery=report(index))
            except (BufferError, KafkaException) as exc:
                errors[index] = exc
                break
        self.producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 2)
        self._producer_failed = any(e is not None for e in errors)
        return errors

    async def _check_broker(self, conn: asyncpg.Connection) -> None:
        if time.monotonic() - self._broker_checked_at < self.broker_check_seconds:
            return
        cluster_id = await asyncio.to_thread(self._cluster_id)
        known = await conn.fetchval("SELECT broker_cluster_id FROM outbox_relay_state WHERE id = 1")
        if known != cluster_id:
            if self.topics_to_create:
                await asyncio.to_thread(ensure_topics, self.bootstrap, self.topics_to_create, self.partitions)
            if known is not None:
                since = datetime.now(UTC) - self.replay_window
                republished = await conn.execute(
                    "UPDATE outbox SET published_at = NULL WHERE published_at > $1", since
                )
                log.warning(
                    "broker is a new instance: republishing recent events",
                    extra={"was": known, "now": cluster_id, "events": int(republished.split()[-1])},
                )
            await conn.execute(
                "INSERT INTO outbox_relay_state (id, broker_cluster_id) VALUES (1, $1) "
                "ON CONFLICT (id) DO UPDATE SET broker_cluster_id = $1, updated_at = now()",
                cluster_id,
            )
        self._broker_checked_at = time.monotonic()

    def _cluster_id(self) -> str:
        try:
            return self.producer.list_topics(timeout=3).cluster_id or ""
        except KafkaException as exc:
            raise BrokerUnavailable(f"broker at {self.bootstrap} does not answer: {exc}") from exc

    async def _wait_for_work(self, stopping: asyncio.Event) -> None:
        if await self._wakeup.wait(stopping, self.idle_poll_seconds):
            # Let the commits of a busy moment gather, so one batch (and round trip) carries them.
            await asyncio.sleep(self.linger_seconds)
        self._wakeup.clear()


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
