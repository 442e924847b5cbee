"""The transactional outbox against real PostgreSQL and the real broker."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import insert

from clinic_platform.outbox import Outbox, OutboxRelay
from local_stack.components import Broker
from local_stack.stack import free_port
from tests.support.events import booked, unique_topic
from tests.support.kafka import read_topic
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]


def relay_for(kit_db, bootstrap: str, **options) -> OutboxRelay:
    options = {"broker_check_seconds": 0.2, "idle_poll_seconds": 0.05, **options}
    return OutboxRelay(kit_db.db, bootstrap=bootstrap, service="kittest", **options)


async def test_a_committed_event_is_published_exactly_once_with_cloudevents_headers(kit_db, stack):
    topic = unique_topic()
    outbox = Outbox(kit_db.metadata, topic)
    relay = relay_for(kit_db, stack.kafka_bootstrap)
    event = booked()
    async with kit_db.db.transaction() as session:
        event_id = await outbox.add(session, event, aggregate_id=event.appointment_id)

    assert await relay.publish_batch() == 1
    assert await relay.publish_batch() == 0  # nothing is published twice
    records = await asyncio.to_thread(read_topic, stack.kafka_bootstrap, topic)

    assert len(records) == 1
    record = records[0]
    assert record.key == event.appointment_id.encode()
    assert record.value == event.SerializeToString()
    assert record.headers["ce_id"] == str(event_id).encode()
    assert record.headers["ce_type"] == b"clinic.appointments.v1.AppointmentBooked"
    assert record.headers["ce_source"] == b"/clinic/kittest"
    assert record.headers["ce_specversion"] == b"1.0"
    assert record.headers["content-type"] == b"application/protobuf"
    assert record.headers["ce_time"].endswith(b"Z")
    await relay.close()


async def test_a_rolled_back_transaction_publishes_nothing(kit_db, stack):
    topic = unique_topic()
    outbox = Outbox(kit_db.metadata, topic)
    relay = relay_for(kit_db, stack.kafka_bootstrap)
    event = booked()

    with pytest.raises(RuntimeError, match="business rule"):
        async with kit_db.db.transaction() as session:
            await outbox.add(session, event, aggregate_id=event.appointment_id)
            raise RuntimeError("a business rule failed after the event was written")

    assert await kit_db.scalar("SELECT count(*) FROM outbox") == 0
    assert await relay.publish_batch() == 0
    assert await asyncio.to_thread(read_topic, stack.kafka_bootstrap, topic) == []
    await relay.close()


async def test_events_committed_while_the_broker_is_down_are_published_when_it_is_back(kit_db, tmp_path):
    broker = Broker(tmp_path, free_port())
    broker.start()
    topic = unique_topic()
    outbox = Outbox(kit_db.metadata, topic)
    relay = relay_for(kit_db, broker.bootstrap)
    stopping = asyncio.Event()
    running = asyncio.create_task(relay.run(stopping))
    kit_db.db.event_listeners.append(relay.wake)
    try:
        before = booked("before the outage")
        async with kit_db.db.transaction() as session:
            await outbox.add(session, before, aggregate_id=before.appointment_id)
        await eventually(lambda: relay.published_total == 1, what="the first event to be published")

        broker.stop()
        during = booked("during the outage")
        async with kit_db.db.transaction() as session:  # the business transaction does not need Kafka
            during_id = await outbox.add(session, during, aggregate_id=during.appointment_id)
        await eventually(lambda: relay.last_error is not None, what="the relay to notice the outage")
        assert await kit_db.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1

        broker.start()  # a new, empty broker instance on the same address
        await eventually(
            lambda: kit_db.scalar("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"),
            what="the event written during the outage to be published",
        )
        records = await asyncio.to_thread(read_topic, broker.bootstrap, topic)
        ids = [r.headers["ce_id"] for r in records]
        assert str(during_id).encode() in ids
        # The new broker started empty; the relay republished the earlier event too.
        assert len(records) == 2
        assert relay.last_error is None
    finally:
        stopping.set()
        await running
        await relay.close()
        broker.stop()


async def test_a_relay_killed_mid_batch_loses_nothing_and_repeats_keep_their_ce_id(kit_db, stack):
    topic = unique_topic()
    outbox = Outbox(kit_db.metadata, topic)
    count = 5000
    rows = [
        outbox.row(event, aggregate_id=event.appointment_id) for event in (booked() for _ in range(count))
    ]
    async with kit_db.db.transaction() as session:
        await session.execute(insert(outbox.table), rows)

    relay_process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.run_relay",
        kit_db.url,
        stack.kafka_bootstrap,
        str(count),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually(
            lambda: asyncio.to_thread(_messages_on, stack.kafka_bootstrap, topic),
            what="the relay to start publishing",
        )
        relay_process.send_signal(signal.SIGKILL)
    finally:
        await relay_process.wait()
    # Killed while producing its batch: nothing was marked published.
    assert await kit_db.scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == 0

    relay = relay_for(kit_db, stack.kafka_bootstrap, batch_size=1000)
    while await relay.publish_batch():
        pass
    await relay.close()

    records = await asyncio.to_thread(read_topic, stack.kafka_bootstrap, topic)
    by_id = defaultdict(list)
    for record in records:
        by_id[record.headers["ce_id"]].append(record)
    assert set(by_id) == {str(row["event_id"]).encode() for row in rows}  # every event is there
    repeats = {ce_id: copies for ce_id, copies in by_id.items() if len(copies) > 1}
    assert repeats, "the killed relay had delivered part of its batch, so some events must repeat"
    for copies in repeats.values():
        assert len({(c.key, c.value) for c in copies}) == 1  # a repeat is the same event


def _messages_on(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks", "log_level": 0})
    try:
        metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in metadata.partitions
        )
    finally:
        consumer.close()
