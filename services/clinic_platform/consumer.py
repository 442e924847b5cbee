"""The one event consumer every service uses: at-least-once delivery made effectively-once.

For each message, in partition order: decode the CloudEvents envelope, then in ONE database
transaction insert its `ce_id` into the inbox and apply the handler; a duplicate finds its id
already there and changes nothing. The offset is committed only after that transaction, so a
consumer killed in between re-reads the message and the inbox absorbs it.

A message that cannot be an event of ours (bad envelope, unknown type, undecodable payload) goes
straight to `<topic>.dlq`; one whose handler keeps failing goes there after `max_attempts`, with
the error in its headers, and consumption goes on. A database that is down is not the event's
fault: the consumer waits and retries without giving up on it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from clinic_platform import events
from clinic_platform.context import request_id_var
from clinic_platform.db import Database, is_connection_error
from clinic_platform.kafka import DELIVERY_TIMEOUT_MS, consumer_config, ensure_topics, producer_config

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, ProtoMessage, events.EventEnvelope], Awaitable[None]]


@dataclass
class ConsumerStats:
    applied: int = 0
    duplicates: int = 0
    skipped: int = 0
    dead_lettered: int = 0


class DeadLetters:
    """Writes messages to `<topic>.dlq` with why they failed in headers. A dead letter must not be
    lost: while the broker does not take it, `send` waits and tries again."""

    def __init__(self, bootstrap: str, client_id: str, *, one_record_per_batch: bool = True) -> None:
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
        batch_size: int = 100,
        one_record_per_batch: bool = True,
        fetch_wait_ms: int = 50,
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
        self.fetch_wait_ms = fetch_wait_ms
        self.inbox = db.metadata.tables["inbox"]
        self.stats = ConsumerStats()
        # librdkafka's consumer is driven from one thread; blocking calls never touch the loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"consumer-{group}")
        self._consumer: Consumer | None = None
        self.dead_letters = DeadLetters(bootstrap, f"{group}-dlq", one_record_per_batch=one_record_per_batch)

    async def _call(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def run(self, stopping: asyncio.Event) -> None:
        if self.create_topics:
            all_topics = self.topics + [events.dlq_for(t) for t in self.topics]
            await self._call(ensure_topics, self.bootstrap, all_topics, self.partitions)
        self._consumer = Consumer(
            consumer_config(self.bootstrap, self.group, fetch_wait_ms=self.fetch_wait_ms)
        )
        await self._call(self._consumer.subscribe, self.topics)
        try:
            while not stopping.is_set():
                messages = await self._call(self._consumer.consume, self.batch_size, 0.25)
                done: dict[tuple[str, int], int] = {}
                for msg in messages:
                    if msg.error():
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("consumer error", extra={"error": str(msg.error())})
                        continue
                    await self._process(msg, stopping)
                    done[(msg.topic(), msg.partition())] = msg.offset() + 1
                if done:
                    await self._commit([TopicPartition(t, p, o) for (t, p), o in done.items()])
        finally:
            await self._call(self._consumer.close)
            await self.dead_letters.close()
            self._executor.shutdown(wait=False)

    async def _commit(self, offsets: list[TopicPartition]) -> None:
        """Commit offsets of messages whose effects are already committed."""
        await self._call(self._consumer.commit, offsets=offsets, asynchronous=False)

    async def _process(self, msg: Message, stopping: asyncio.Event) -> None:
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
                if events.message_class(envelope.type) is None:
                    raise events.MalformedEvent(f"unknown event type {envelope.type!r}")
                self.stats.skipped += 1  # a known event this consumer has no use for
                return
            cls, handler = registered
            event = cls.FromString(payload)
            event_id = uuid.UUID(envelope.id)
        except (events.MalformedEvent, DecodeError, ValueError) as exc:
            await self._dead_letter(msg, exc, attempts=1)
            return

        token = request_id_var.set(envelope.request_id)
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    applied = await self._apply(event_id, envelope, event, handler)
                except Exception as exc:
                    if is_connection_error(exc):
                        attempt -= 1  # the database is down, not the event: wait as long as it takes
                        if stopping.is_set():
                            raise
                    elif attempt >= self.max_attempts:
                        await self._dead_letter(msg, exc, attempts=attempt)
                        return
                    log.warning(
                        "event handling failed, retrying",
                        extra={
                            "event_id": envelope.id,
                            "type": envelope.type,
                            "attempt": attempt,
                            "error": repr(exc),
                        },
                    )
                    await asyncio.sleep(min(self.retry_base_seconds * 2**attempt, 5.0))
                    continue
                if applied:
                    self.stats.applied += 1
                else:
                    self.stats.duplicates += 1
                return
        finally:
            request_id_var.reset(token)

    async def _apply(self, event_id, envelope, event, handler) -> bool:
        async with self.db.transaction() as session:
            inserted = await session.execute(
                pg_insert(self.inbox)
                .values(event_id=event_id, consumer=self.group, event_type=envelope.type)
                .on_conflict_do_nothing()
                .returning(self.inbox.c.event_id)
            )
            if inserted.first() is None:
                return False
            await handler(session, event, envelope)
            return True

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
