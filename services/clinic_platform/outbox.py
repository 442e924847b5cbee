"""The transactional outbox: events are written in the business transaction and published by a
relay, so nothing is published for a rollback and nothing committed is lost while Kafka is down.

Writing: `Outbox.add(session, event, aggregate_id=...)` inside the service's transaction, or
`Outbox.row(...)` to embed the insert in a single statement (a CTE) on a hot path.

Publishing: `OutboxRelay.run()` claims unpublished rows in id order (`FOR UPDATE SKIP LOCKED`),
produces them with an idempotent producer (acks=all), waits for every delivery report and marks
the delivered prefix published. A transaction-scoped advisory lock lets one relay replica work
at a time, which is what keeps events of one aggregate in order across replicas. On failure it
backs off and tries again; a repeat carries the same `ce_id`, so consumers drop the duplicate.

Parking: an event the broker refuses for what it is (too large, an invalid record), not because
it is down, would otherwise hold back every later event of the service forever. The relay counts
such refusals per row (`attempts`, `last_error`); a row refused before is sent alone, so its next
refusal is surely its own and not a batch-mate's, and after `max_attempts` refusals it is parked
(`parked_at`), logged at ERROR (event id and type, never the payload), and the relay goes on with
the later rows. Later events of the same aggregate then overtake the parked one. We accept that:
the alternative blocks every event of the service (one topic, one relay) behind a record the
broker will never take, consumers already take versions out of order (an older one arriving late
changes nothing), and the ERROR line and `parked_events` make it an alarm. Once the cause is fixed,
`UPDATE outbox SET parked_at = NULL WHERE event_id = ...` sends it again (alone; if it is still
refused, it is parked again at once). A broker that is down, slow, or missing the topic is not the
event's fault: nothing is counted or parked, and the age of the oldest unsent event says it all.

Stuck: `oldest_unsent_age_seconds()` (for a metric) is the age of the oldest event still to send;
while it is above `stuck_after_seconds` the relay logs an ERROR every `stuck_log_every_seconds`,
and an INFO once it is back below.

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
from confluent_kafka import KafkaError, KafkaException, Producer
from google.protobuf.message import Message
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.schema import MetaData

from clinic_platform import events
from clinic_platform.context import current_request_id
from clinic_platform.db import Database
from clinic_platform.kafka import DELIVERY_TIMEOUT_MS, ensure_topics, producer_config
from clinic_platform.periodic import run_every, sleep_unless_stopped
from clinic_platform.wakeup import Wakeup

log = logging.getLogger(__name__)


# The columns a writer fills, in this order in `Outbox.values` and in SQL written by hand:
# "INSERT INTO outbox (event_id, topic, event_type, aggregate_id, payload, request_id)".
COLUMNS = ("event_id", "topic", "event_type", "aggregate_id", "payload", "request_id")


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

    def values(self, event: Message, *, aggregate_id: str) -> tuple:
        """`row` as statement parameters, in the order of COLUMNS (for a hot path on asyncpg)."""
        row = self.row(event, aggregate_id=aggregate_id)
        return tuple(row[column] for column in COLUMNS)

    async def add(self, session: AsyncSession, event: Message, *, aggregate_id: str) -> uuid.UUID:
        values = self.row(event, aggregate_id=aggregate_id)
        await session.execute(insert(self.table).values(**values))
        session.info["wrote_events"] = True
        return values["event_id"]


class BrokerUnavailable(Exception):
    pass


class EventRefused(Exception):
    """The broker refused an event for what it is; it is retried (alone) until it is parked."""


# Errors about the record itself: sending the same bytes again cannot help. Everything else (time
# outs, a broker down or restarting, a full local queue, an unknown topic, missing rights) is
# retried without counting; a topic-wide problem hits every event of the service alike, so parking
# them one by one would only empty the outbox into the parked pile.
RECORD_REFUSALS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # over message.max.bytes (produce() raises it) or the broker's limit
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,  # a batch of one (how a refused row is retried) is its record
    }
)


def _refused(error: object) -> bool:
    return isinstance(error, KafkaError) and error.code() in RECORD_REFUSALS


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
        one_record_per_batch: bool = False,
        max_attempts: int = 5,
        stuck_after_seconds: float = 30.0,
        stuck_log_every_seconds: float = 60.0,
        age_check_seconds: float = 1.0,
    ) -> None:
        if max_attempts < 2:
            raise ValueError(
                "max_attempts must be at least 2: a row is parked only after it is refused alone"
            )
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
        self.max_attempts = max_attempts
        self.stuck_after_seconds = stuck_after_seconds
        self.stuck_log_every_seconds = stuck_log_every_seconds
        self.age_check_seconds = age_check_seconds
        self._producer_config = producer_config(
            bootstrap, f"{service}-outbox-relay", one_record_per_batch=one_record_per_batch
        )
        self.producer = Producer(self._producer_config)
        self._producer_failed = False
        self._wakeup = Wakeup()
        self._broker_checked_at = 0.0
        self.published_total = 0
        self.last_error: str | None = None  # why the last attempt failed; None once it succeeds
        self.parked_total = 0  # rows this relay parked
        self.parked_events = 0  # rows parked in the database, as of the last age check
        self._oldest_unsent_since: float | None = None  # monotonic time; None: nothing to send
        self._stuck_logged_at: float | None = None  # set while the relay counts as stuck

    def oldest_unsent_age_seconds(self) -> float:
        """How long the oldest event still to be published (parked ones aside) has waited, as of
        the last check (every `age_check_seconds` while `run` runs); 0 when there is none. It
        keeps growing while the database cannot be asked: then nothing is published either."""
        if self._oldest_unsent_since is None:
            return 0.0
        return time.monotonic() - self._oldest_unsent_since

    def wake(self) -> None:
        """Called after a transaction that wrote events commits."""
        self._wakeup.ring()

    async def run(self, stopping: asyncio.Event) -> None:
        # The age is watched beside publishing, so the alarm sounds even while a round hangs.
        watching = asyncio.create_task(self._watch_age(stopping))
        try:
            await self._publish_until(stopping)
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

    async def _publish_until(self, stopping: asyncio.Event) -> None:
        delay = 0.1
        failing_since: float | None = None
        while not stopping.is_set():
            try:
                published = await self.publish_batch()
            except Exception as exc:
                # Broker or database down, or an event refused: nothing is lost, the rows stay.
                self.last_error = str(exc)
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("outbox relay cannot publish yet, retrying", extra={"error": str(exc)})
                self._broker_checked_at = 0.0  # the broker may come back as a new instance
                await sleep_unless_stopped(stopping, delay)
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
        """Publish up to batch_size events; returns how many rows are done (published or parked)."""
        failure: Exception | None = None
        pool = await self.db.pool()
        async with pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RELAY_LOCK_KEY):
                return 0  # another replica is publishing
            await self._check_broker(conn)
            rows = await conn.fetch(
                "SELECT id, event_id, topic, event_type, aggregate_id, payload, request_id, occurred_at, "
                "attempts FROM outbox WHERE published_at IS NULL AND parked_at IS NULL "
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch_size,
            )
            if not rows:
                return 0
            if rows[0]["attempts"]:
                rows = rows[:1]  # refused before: alone, so that a refusal is its own (see "Parking")
            if self._producer_failed:
                # After a failed delivery start a fresh producer: an idempotent producer facing a
                # new broker instance retries forever with a producer id that broker never issued.
                self.producer = Producer(self._producer_config)
                self._producer_failed = False
            errors = await asyncio.to_thread(self._deliver, rows)
            delivered, parked = [], 0
            # Keep order: stop at the first failure and retry from there, unless the row is parked.
            for row, error in zip(rows, errors, strict=True):
                if error is None:
                    delivered.append(row["id"])
                elif not _refused(error):
                    failure = BrokerUnavailable(f"{len(rows) - len(delivered)} events not delivered: {error}")
                    break
                elif await self._count_refusal(conn, row, error, alone=len(rows) == 1):
                    parked += 1  # and go on with the later rows
                else:
                    event = f"{row['event_id']} ({row['event_type']})"
                    failure = EventRefused(f"the broker refused event {event}: {error.str()}")
                    break
            if delivered:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", delivered
                )
        self.published_total += len(delivered)
        if failure is not None:
            raise failure
        return len(delivered) + parked

    async def _count_refusal(
        self, conn: asyncpg.Connection, row: Any, error: KafkaError, *, alone: bool
    ) -> bool:
        """Record a refusal of the row; returns True when the row is parked now."""
        attempts = row["attempts"] + 1
        park = alone and attempts >= self.max_attempts
        await conn.execute(
            "UPDATE outbox SET attempts = $2, last_error = $3, parked_at = CASE WHEN $4 THEN now() END "
            "WHERE id = $1",
            row["id"],
            attempts,
            error.str(),
            park,
        )
        if park:
            self.parked_total += 1
            log.error(
                "outbox event parked: the broker refuses it",
                extra={
                    "event_id": str(row["event_id"]),
                    "type": row["event_type"],
                    "topic": row["topic"],
                    "attempts": attempts,
                    "error": error.str(),
                },
            )
        return park

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
            except KafkaException as exc:
                errors[index] = exc.args[0]  # a KafkaError, e.g. MSG_SIZE_TOO_LARGE
                break
            except BufferError as exc:
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

    async def _watch_age(self, stopping: asyncio.Event) -> None:
        # A failing check (the database is down) is logged at debug: publishing already says so,
        # and the age keeps growing from the last reading, so the alarm still fires.
        await run_every(
            self.age_check_seconds,
            self._check_age,
            stopping,
            failure="outbox age check failed",
            failure_level=logging.DEBUG,
        )

    async def _check_age(self) -> None:
        try:
            async with asyncio.timeout(5):
                await self._refresh_age()
        finally:
            self._alarm_if_stuck()

    async def _refresh_age(self) -> None:
        """The oldest unsent event's age and the number of parked events, from the database."""
        pool = await self.db.pool()
        async with pool.acquire() as conn:
            # The oldest by id, not min(occurred_at): the index gives it at once, and ids follow
            # time closely (an id is taken at insert, occurred_at at its transaction's start).
            age, self.parked_events = await conn.fetchrow(
                "SELECT (SELECT extract(epoch FROM clock_timestamp() - occurred_at)::float8 "
                "FROM outbox WHERE published_at IS NULL AND parked_at IS NULL ORDER BY id LIMIT 1), "
                "(SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL)"
            )
        self._oldest_unsent_since = None if age is None else time.monotonic() - max(age, 0.0)

    def _alarm_if_stuck(self) -> None:
        age, now = self.oldest_unsent_age_seconds(), time.monotonic()
        if age > self.stuck_after_seconds:
            if self._stuck_logged_at is None or now - self._stuck_logged_at >= self.stuck_log_every_seconds:
                self._stuck_logged_at = now
                log.error(
                    "outbox events are not being published",
                    extra={"oldest_unsent_age_seconds": round(age, 1), "error": self.last_error},
                )
        elif self._stuck_logged_at is not None:
            self._stuck_logged_at = None
            log.info(
                "outbox events are being published again", extra={"oldest_unsent_age_seconds": round(age, 1)}
            )

    async def _wait_for_work(self, stopping: asyncio.Event) -> None:
        if await self._wakeup.wait(stopping, self.idle_poll_seconds):
            # Let the commits of a busy moment gather, so one batch (and round trip) carries them.
            await asyncio.sleep(self.linger_seconds)
        self._wakeup.clear()
