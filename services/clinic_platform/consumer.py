"""The one event consumer every service uses: at-least-once delivery made effectively-once, in
batches.

Each round takes what the broker has fetched, up to `batch_size` messages (the first one as soon
as it arrives, so a quiet system adds no batching delay), and then:

1. decodes the CloudEvents envelopes. A message that cannot be an event of ours (bad envelope,
   undecodable payload) goes to `<topic>.dlq`. An event type with no handler here is skipped and
   counted: a known type this service has no use for, or a type it does not know yet (a producer
   may ship new types before its consumers).
2. applies the events of each lane (a partition's keys split LANES ways) in ONE database
   transaction, the lanes side by side: one statement inserts every `ce_id` into the inbox and
   returns the new ones, then each new event's handler runs, in partition order. A duplicate
   (already in the inbox, or twice in the batch) changes nothing.
3. commits the offsets, only after that transaction. A consumer killed in between reads the
   batch again and the inbox absorbs it.

A handler that fails rolls the transaction back; the events before it are applied again without
it, and it is retried on its own with backoff, then sent to the DLQ after `max_attempts` with the
error in its headers, and the events after it follow. (Re-running the batch's head on the rare
failure is cheaper than a savepoint round trip per event on every batch.)

A database that is down is not the event's fault: the consumer pauses its partitions and keeps
polling the broker (so it stays in its group however long the outage lasts) and tries the batch
again. A failed offset commit is kept and retried with the next commit and before partitions are
revoked; whatever a rebalance redelivers, the inbox absorbs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from clinic_platform import events
from clinic_platform.context import request_id_var
from clinic_platform.db import Database, is_connection_error
from clinic_platform.kafka import DELIVERY_TIMEOUT_MS, consumer_config, ensure_topics, producer_config

log = logging.getLogger(__name__)

# Lanes per partition applied side by side (each a transaction and a pooled connection).
LANES = 4

Handler = Callable[[AsyncSession, ProtoMessage, events.EventEnvelope], Awaitable[None]]
Partition = tuple[str, int]

CLAIM_IN_INBOX = text(
    "INSERT INTO inbox (event_id, consumer, event_type)"
    " SELECT id, :consumer, type FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[])) AS e(id, type)"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)


@dataclass
class ConsumerStats:
    applied: int = 0
    duplicates: int = 0
    skipped: int = 0  # a known event type this consumer has no use for
    unknown: int = 0  # an event type no one here knows yet (a newer producer)
    dead_lettered: int = 0
    batches: int = 0
    commit_failures: int = 0
    database_waits: int = 0  # rounds the batch waited for the database


@dataclass(frozen=True)
class Pending:
    """A decoded event waiting for its handler."""

    msg: Message
    envelope: events.EventEnvelope
    event: ProtoMessage
    handler: Handler
    event_id: uuid.UUID


class _HandlerFailed(Exception):
    def __init__(self, item: Pending, error: Exception) -> None:
        self.item, self.error = item, error


class _Stopped(Exception):
    """Stopping while the database is down: leave without committing; the broker redelivers."""


class DeadLetters:
    """Writes messages to `<topic>.dlq` with why they failed in headers. A dead letter must not be
    lost: while the broker does not take it, `send` waits and tries again."""

    def __init__(self, bootstrap: str, client_id: str, *, one_record_per_batch: bool = False) -> None:
        self._config = producer_config(bootstrap, client_id, one_record_per_batch=one_record_per_batch)
        self._producer = Producer(self._config)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        *,
        error: str,
        consumer: str,
        attempts: int,
        more: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        headers = [
            *headers,
            ("dlq_error", error.encode()[:4000]),
            ("dlq_consumer", consumer.encode()),
            ("dlq_attempts", str(attempts).encode()),
            ("dlq_original_topic", topic.encode()),
            *more,
        ]
        delay = 0.2
        while True:
            failures: list = []
            self._producer.produce(
                events.dlq_for(topic),
                value,
                key,
                headers=headers,
                on_delivery=lambda err, _m, failures=failures: failures.append(err) if err else None,
            )
            await asyncio.to_thread(self._producer.flush, DELIVERY_TIMEOUT_MS / 1000 + 2)
            if not failures:
                return
            self._producer = Producer(self._config)  # a fresh producer id, see OutboxRelay
            log.warning("cannot write to the DLQ yet, retrying", extra={"error": str(failures[0])})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        await asyncio.to_thread(self._producer.flush, DELIVERY_TIMEOUT_MS / 1000)


class EventConsumer:
    """Subscribe `handlers` (protobuf class -> coroutine) to `topics` as consumer group `group`."""

    def __init__(
        self,
        db: Database,
        *,
        bootstrap: str,
        group: str,
        topics: list[str],
        handlers: dict[type[ProtoMessage], Handler],
        max_attempts: int = 5,
        retry_base_seconds: float = 0.2,
        create_topics: bool = True,
        partitions: int = 3,
        batch_size: int = 500,
        one_record_per_batch: bool = False,
        fetch_wait_ms: int = 50,
        kafka_options: dict | None = None,
    ) -> None:
        self.db = db
        self.bootstrap = bootstrap
        self.group = group
        self.topics = topics
        self.handlers = {cls.DESCRIPTOR.full_name: (cls, handler) for cls, handler in handlers.items()}
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.create_topics = create_topics
        self.partitions = partitions
        self.batch_size = batch_size
        self.config = {
            **consumer_config(bootstrap, group, fetch_wait_ms=fetch_wait_ms),
            **(kafka_options or {}),
        }
        self.stats = ConsumerStats()
        # librdkafka's consumer is driven from one thread; blocking calls never touch the loop. The
        # rebalance callbacks run in that thread too, inside poll, while the loop awaits the call.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"consumer-{group}")
        self._consumer: Consumer | None = None
        self._uncommitted: dict[Partition, int] = {}  # next offset to commit, effects committed
        self._revoked: set[Partition] = set()  # taken away while their messages were in hand
        self._held: list[Message] = []  # returned by a poll while the batch waited
        self._paused = False
        self._next_commit_try = 0.0
        self._unknown_types: set[str] = set()
        self.dead_letters = DeadLetters(bootstrap, f"{group}-dlq", one_record_per_batch=one_record_per_batch)

    async def _call(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # -- the loop ---------------------------------------------------------------------------------
    async def run(self, stopping: asyncio.Event) -> None:
        if self.create_topics:
            all_topics = self.topics + [events.dlq_for(t) for t in self.topics]
            await self._call(ensure_topics, self.bootstrap, all_topics, self.partitions)
        self._consumer = Consumer(self.config)
        await self._call(
            self._consumer.subscribe, self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        try:
            while not stopping.is_set():
                messages = await self._call(self._next_batch)
                if messages:
                    self.stats.batches += 1
                    await self._handle(messages, stopping)
                if self._uncommitted and (messages or time.monotonic() >= self._next_commit_try):
                    await self._commit_done()
        except _Stopped:
            pass
        finally:
            await self._call(self._consumer.close)
            await self.dead_letters.close()
            self._executor.shutdown(wait=False)

    def _next_batch(self) -> list[Message]:
        """Up to batch_size messages: wait briefly for the first, then take what is already
        fetched without waiting (consumer thread)."""
        if self._paused:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False
        batch, self._held = self._held, []
        if not batch:
            first = self._consumer.poll(0.1)
            if first is None:
                return []
            batch = [first]
        if len(batch) < self.batch_size:
            batch += self._consumer.consume(self.batch_size - len(batch), 0)
        return batch

    async def _handle(self, messages: list[Message], stopping: asyncio.Event) -> None:
        pending: list[Pending] = []
        for msg in messages:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", extra={"error": str(msg.error())})
                continue
            item = await self._decode(msg)
            if item is not None:
                pending.append(item)
        # Only an aggregate's own events must keep their order (they share a key, so a partition).
        # Each lane (a partition's keys split LANES ways) is applied in a transaction of its own,
        # side by side with the others, so their round trips overlap.
        lanes: dict[tuple, list[Pending]] = {}
        for item in pending:
            lane = zlib.crc32(item.msg.key() or b"") % LANES
            lanes.setdefault((item.msg.topic(), item.msg.partition(), lane), []).append(item)
        try:
            async with asyncio.TaskGroup() as group:
                for items in lanes.values():
                    group.create_task(self._apply_in_order(items, stopping))
        except* _Stopped:
            raise _Stopped from None
        # Every message of the batch is applied, a duplicate, skipped or dead-lettered: the
        # offsets may be committed (not those of partitions another consumer owns by now).
        for msg in messages:
            partition = (msg.topic(), msg.partition())
            if not msg.error() and partition not in self._revoked:
                self._uncommitted[partition] = max(self._uncommitted.get(partition, 0), msg.offset() + 1)

    async def _decode(self, msg: Message) -> Pending | None:
        """The event and its handler, or None when it is skipped or dead-lettered here."""
        try:
            envelope, payload = events.decode(
                msg.headers(),
                msg.key(),
                msg.value(),
                topic=msg.topic(),
                partition=msg.partition(),
                offset=msg.offset(),
            )
            registered = self.handlers.get(envelope.type)
            if registered is None:
                self._skip(envelope.type)
                return None
            cls, handler = registered
            return Pending(msg, envelope, cls.FromString(payload), handler, uuid.UUID(envelope.id))
        except (events.MalformedEvent, DecodeError, ValueError) as exc:
            await self._dead_letter(msg, exc, attempts=1)
            return None

    def _skip(self, event_type: str) -> None:
        if events.message_class(event_type) is not None:
            self.stats.skipped += 1
            return
        self.stats.unknown += 1
        if event_type not in self._unknown_types:  # once per type, not per event
            self._unknown_types.add(event_type)
            log.warning("skipping events of a type this service does not know", extra={"type": event_type})

    # -- applying ---------------------------------------------------------------------------------
    async def _apply_in_order(self, items: list[Pending], stopping: asyncio.Event) -> None:
        while items:
            failure = await self._apply(items, stopping)
            if failure is None:
                return
            index = next(n for n, item in enumerate(items) if item is failure.item)
            if index > 0:
                await self._apply_in_order(items[:index], stopping)
            await self._retry_alone(failure.item, failure.error, stopping)
            items = items[index + 1 :]

    async def _apply(self, items: list[Pending], stopping: asyncio.Event) -> _HandlerFailed | None:
        """All of `items` in one transaction, or none of them and the first that failed."""
        delay = self.retry_base_seconds
        while True:
            items = [i for i in items if (i.msg.topic(), i.msg.partition()) not in self._revoked]
            if not items:
                return None
            try:
                applied, duplicates = await self._transaction(items)
            except _HandlerFailed as failed:
                return failed
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self.stats.database_waits += 1
                log.warning(
                    "database unavailable: holding the batch",
                    extra={"events": len(items), "error": repr(exc)},
                )
                await self._wait_polling(delay, stopping)
                delay = min(delay * 2, 5.0)
                continue
            self.stats.applied += applied
            self.stats.duplicates += duplicates
            return None

    async def _transaction(self, items: list[Pending]) -> tuple[int, int]:
        applied = 0
        async with self.db.transaction() as session:
            claimed = await session.execute(
                CLAIM_IN_INBOX,
                {
                    "consumer": self.group,
                    "ids": [i.event_id for i in items],
                    "types": [i.envelope.type for i in items],
                },
            )
            new = set(claimed.scalars())
            for item in items:
                if item.event_id not in new:
                    continue
                new.discard(item.event_id)  # a second copy in this batch is a duplicate
                token = request_id_var.set(item.envelope.request_id)
                try:
                    await item.handler(session, item.event, item.envelope)
                except Exception as exc:
                    if is_connection_error(exc):
                        raise
                    raise _HandlerFailed(item, exc) from exc
                finally:
                    request_id_var.reset(token)
                applied += 1
        return applied, len(items) - applied

    async def _retry_alone(self, item: Pending, error: Exception, stopping: asyncio.Event) -> None:
        attempt = 1
        while True:
            log.warning(
                "event handling failed, retrying",
                extra={
                    "event_id": item.envelope.id,
                    "type": item.envelope.type,
                    "attempt": attempt,
                    "error": repr(error),
                },
            )
            if attempt >= self.max_attempts:
                await self._dead_letter(item.msg, error, attempts=attempt)
                return
            await self._wait_polling(min(self.retry_base_seconds * 2**attempt, 5.0), stopping)
            attempt += 1
            failure = await self._apply([item], stopping)
            if failure is None:
                return
            error = failure.error

    async def _wait_polling(self, seconds: float, stopping: asyncio.Event) -> None:
        """Wait without leaving the group: partitions paused, the broker polled meanwhile."""
        await self._call(self._pause)
        deadline = time.monotonic() + seconds
        while not stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            await self._call(self._poll_held, min(left, 0.5))
        if stopping.is_set():
            raise _Stopped

    def _pause(self) -> None:
        if not self._paused:
            self._consumer.pause(self._consumer.assignment())
            self._paused = True

    def _poll_held(self, seconds: float) -> None:
        msg = self._consumer.poll(seconds)  # serves rebalances; paused partitions return nothing
        if msg is not None:
            self._held.append(msg)  # a partition assigned meanwhile: its turn comes next

    # -- offsets ----------------------------------------------------------------------------------
    async def _commit_done(self) -> None:
        done = dict(self._uncommitted)
        try:
            await self._commit([TopicPartition(t, p, o) for (t, p), o in done.items()])
        except KafkaException as exc:
            # Kept: the next commit carries it (or the revoke callback, before a rebalance).
            self.stats.commit_failures += 1
            self._next_commit_try = time.monotonic() + 1.0
            log.warning("offset commit failed; retrying with the next one", extra={"error": str(exc)})
            return
        for partition, offset in done.items():
            if self._uncommitted.get(partition) == offset:
                del self._uncommitted[partition]

    async def _commit(self, offsets: list[TopicPartition]) -> None:
        """Commit offsets of messages whose effects are already committed."""
        await self._call(self._consumer.commit, offsets=offsets, asynchronous=False)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoked -= {(p.topic, p.partition) for p in partitions}
        if self._paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what is done for these partitions while they are still ours; the new owner
        starts after it (or redelivers, if this commit fails, and the inbox absorbs it)."""
        revoked = {(p.topic, p.partition) for p in partitions}
        done = [TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items() if (t, p) in revoked]
        if done:
            try:
                consumer.commit(offsets=done, asynchronous=False)
            except KafkaException as exc:
                self.stats.commit_failures += 1
                log.warning("offset commit before a rebalance failed", extra={"error": str(exc)})
        for partition in revoked:
            self._uncommitted.pop(partition, None)
        self._revoked |= revoked
        self._held = [m for m in self._held if (m.topic(), m.partition()) not in revoked]

    async def _dead_letter(self, msg: Message, error: BaseException, attempts: int) -> None:
        await self.dead_letters.send(
            msg.topic(),
            msg.key(),
            msg.value(),
            msg.headers() or [],
            error=f"{type(error).__name__}: {error}",
            consumer=self.group,
            attempts=attempts,
            more=(
                ("dlq_original_partition", str(msg.partition()).encode()),
                ("dlq_original_offset", str(msg.offset()).encode()),
            ),
        )
        self.stats.dead_lettered += 1
        log.error(
            "event sent to the dead-letter queue",
            extra={"topic": msg.topic(), "offset": msg.offset(), "error": str(error), "attempts": attempts},
        )
