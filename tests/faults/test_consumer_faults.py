"""The kit's consumer under faults, on the real broker and PostgreSQL: a failed offset commit, a
rebalance while a batch is being applied, and a database outage longer than the poll interval.
In every case the consumer keeps running and every event's effect exists exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid

from confluent_kafka import KafkaError, KafkaException
from sqlalchemy import text

from clinic.appointments.v1 import events_pb2
from clinic_platform.consumer import EventConsumer
from clinic_platform.db import Database
from tests.integration.test_consumer import Running, consumer_for
from tests.support.events import booked, encoded, ledger_handler, produce_raw, unique_topic
from tests.support.polling import eventually
from tests.support.proxy import Proxy


async def produce(stack, topic: str, count: int) -> list[str]:
    """`count` events with keys spread over the partitions; returns their ids."""
    messages = [encoded(booked(f"e{n}")) for n in range(count)]
    await asyncio.to_thread(produce_raw, stack.kafka_bootstrap, topic, messages)
    return [dict(m[0])["ce_id"].decode() for m in messages]


async def effects(kit_db) -> dict[str, int]:
    """How many ledger rows each event id has."""
    async with kit_db.db.engine.connect() as conn:
        rows = await conn.execute(text("SELECT event_id::text, count(*) FROM ledger GROUP BY 1"))
        return dict(rows.all())


class CommitFailsTwice(EventConsumer):
    """The broker refuses the first two offset commits (as during a rebalance or a coordinator
    move); the consumer must keep going and commit them later."""

    refused = 0

    async def _commit(self, offsets) -> None:
        if self.refused < 2:
            self.refused += 1
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
        await super()._commit(offsets)


async def test_a_failed_offset_commit_does_not_stop_the_consumer_and_is_committed_later(kit_db, stack):
    topic = unique_topic()
    group = f"kittest-{uuid.uuid4().hex[:8]}"
    first = await produce(stack, topic, 50)
    consumer = CommitFailsTwice(
        kit_db.db,
        bootstrap=stack.kafka_bootstrap,
        group=group,
        topics=[topic],
        handlers={events_pb2.AppointmentBooked: ledger_handler(kit_db.metadata)},
    )
    async with Running(consumer) as running:
        await eventually(lambda: running.stats.applied == 50, what="the first events")
        second = await produce(stack, topic, 50)
        await eventually(lambda: running.stats.applied == 100, what="events after the failed commits")
        await eventually(lambda: not running._uncommitted, what="the offsets committed at last")
        assert running.stats.commit_failures == 2

    assert await effects(kit_db) == dict.fromkeys(first + second, 1)
    # The offsets that failed at first were committed later: a new member of the group
    # resumes after them and finds nothing to redo.
    after = consumer_for(kit_db, stack.kafka_bootstrap, topic, group=group)
    async with Running(after):
        third = await produce(stack, topic, 5)
        await eventually(lambda: after.stats.applied == 5, what="the next events")
    assert after.stats.duplicates == 0
    assert await effects(kit_db) == dict.fromkeys(first + second + third, 1)


async def test_a_rebalance_while_a_batch_is_applied_loses_nothing_and_applies_nothing_twice(kit_db, stack):
    topic = unique_topic()
    group = f"kittest-{uuid.uuid4().hex[:8]}"
    ids = await produce(stack, topic, 400)
    record = ledger_handler(kit_db.metadata)
    in_batch, release = asyncio.Event(), asyncio.Event()

    async def slow(session, event, envelope):
        await asyncio.sleep(0.02)  # a slow handler: alone, the first member needs 8 s for all
        await record(session, event, envelope)

    async def held_until_released(session, event, envelope):
        in_batch.set()
        await release.wait()  # the first batch stays open while a second member joins
        await slow(session, event, envelope)

    def member(handler) -> EventConsumer:
        return EventConsumer(
            kit_db.db,
            bootstrap=stack.kafka_bootstrap,
            group=group,
            topics=[topic],
            handlers={events_pb2.AppointmentBooked: handler},
            batch_size=50,
        )

    first, second = member(held_until_released), member(slow)
    first_running = Running(first)
    async with first_running:
        await eventually(in_batch.is_set, what="the first member inside a batch")
        async with Running(second):
            # The second member's join starts a rebalance; let the first finish its batch then.
            await eventually(lambda: second._consumer is not None, what="the second member subscribed")
            release.set()
            await eventually(
                lambda: first.stats.applied + second.stats.applied == 400, within=60, what="every event"
            )
            both_worked = second.stats.applied > 0
            assert not first_running.task.done(), "the first member died in the rebalance"

    assert await effects(kit_db) == dict.fromkeys(ids, 1)
    assert both_worked, "the second member never got a partition: no rebalance happened"


async def test_a_database_outage_longer_than_the_poll_interval_keeps_the_consumer_in_its_group(kit_db, stack):
    proxy = await Proxy(stack.ports.postgres).start()
    db = Database(kit_db.url.replace(f":{stack.ports.postgres}/", f":{proxy.port}/"), kit_db.metadata)
    topic = unique_topic()
    # The broker drops a member that has not polled for max.poll.interval.ms (7 s here).
    consumer = EventConsumer(
        db,
        bootstrap=stack.kafka_bootstrap,
        group=f"kittest-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        handlers={events_pb2.AppointmentBooked: ledger_handler(kit_db.metadata)},
        retry_base_seconds=0.2,
        kafka_options={"max.poll.interval.ms": 7000},
    )
    try:
        running = Running(consumer)
        async with running:
            before = await produce(stack, topic, 20)
            await eventually(lambda: consumer.stats.applied == 20, what="events before the outage")
            await proxy.cut()
            during = await produce(stack, topic, 20)
            outage_ends = time.monotonic() + 10  # longer than max.poll.interval.ms
            await eventually(
                lambda: time.monotonic() > outage_ends and consumer.stats.database_waits >= 3,
                within=30,
                what="an outage longer than the poll interval",
            )
            assert not running.task.done(), "the consumer died during the outage"
            await proxy.restore()
            await eventually(lambda: consumer.stats.applied == 40, within=30, what="the held batch")
            after = await produce(stack, topic, 5)
            await eventually(lambda: consumer.stats.applied == 45, within=30, what="events after the outage")
            assert consumer.stats.commit_failures == 0  # still a member: its commits were accepted
    finally:
        await proxy.close()
        await db.close()
    assert await effects(kit_db) == dict.fromkeys(before + during + after, 1)
