"""The transactional outbox against real PostgreSQL and the real broker."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from sqlalchemy import insert

from clinic_platform.outbox import Outbox, OutboxRelay
from local_stack.components import Broker
from local_stack.stack import free_port
from tests.support.events import booked, unique_topic
from tests.support.kafka import Record
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]


def relay_for(kit_db, bootstrap: str, **options) -> OutboxRelay:
    options = {"broker_check_seconds": 0.2, "idle_poll_seconds": 0.05, **options}
    return OutboxRelay(kit_db.db, bootstrap=bootstrap, service="kittest", **options)


END_MARKER = ("test-end-marker", b"")


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Record]:
    """Every record on the topic. Not up to the high watermarks (tests/support/kafka.py does that):
    the local broker reports them too low after multi-record batches, as the relay now sends (see
    test_broker_conformance). The real end of each partition is the offset the broker gives an
    end marker produced into it; markers (this read's and earlier ones) are not returned."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "log_level": 0})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        ends: dict[int, int] = {}

        def stored(err, msg) -> None:
            if err is None:
                ends[msg.partition()] = msg.offset()

        marker = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
        for partition in metadata.partitions:
            marker.produce(topic, b"", partition=partition, headers=[END_MARKER], on_delivery=stored)
        assert marker.flush(10) == 0 and len(ends) == len(metadata.partitions), "end markers not stored"
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        records: list[Record] = []
        position = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout
        while any(position[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end: at {position}, end {ends}")
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            headers = dict(msg.headers() or [])
            if msg.offset() < ends[msg.partition()] and END_MARKER[0] not in headers:
                records.append(
                    Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers)
                )
            position[msg.partition()] = msg.offset() + 1
        return records
    finally:
        consumer.close()


async def outbox_row(kit_db, event_id) -> dict:
    pool = await kit_db.db.pool()
    row = await pool.fetchrow(
        "SELECT attempts, last_error, parked_at, published_at FROM outbox WHERE event_id = $1", event_id
    )
    return dict(row)


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


# A relay that dies (SIGKILL: no clean-up) at the worst moment: the broker has taken the first half
# of its batch and the database has recorded none of it.
RELAY_KILLED_MID_BATCH = """
import asyncio, os, signal, sys
from clinic_platform.db import Database
from clinic_platform.outbox import OutboxRelay
from tests.support.kit import kit_metadata

class DiesMidBatch(OutboxRelay):
    def _deliver(self, rows):
        errors = super()._deliver(rows[: len(rows) // 2])
        assert not any(errors), errors
        os.kill(os.getpid(), signal.SIGKILL)

url, bootstrap, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = Database(url, kit_metadata())
relay = DiesMidBatch(db, bootstrap=bootstrap, service="kittest", batch_size=batch_size)
asyncio.run(relay.publish_batch())
"""


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
        sys.executable, "-c", RELAY_KILLED_MID_BATCH, kit_db.url, stack.kafka_bootstrap, str(count), cwd=ROOT
    )
    assert await relay_process.wait() == -signal.SIGKILL
    assert await kit_db.scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == 0
    assert len(await asyncio.to_thread(read_topic, stack.kafka_bootstrap, topic)) == count // 2

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
    pool = await kit_db.db.pool()
    first_half = {
        str(r["event_id"]).encode()
        for r in await pool.fetch("SELECT event_id FROM outbox ORDER BY id LIMIT $1", count // 2)
    }
    assert set(repeats) == first_half  # what the killed relay had delivered is published again
    for copies in repeats.values():
        assert len(copies) == 2
        assert len({(c.key, c.value) for c in copies}) == 1  # a repeat is the same event


def logged(caplog, level: int, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == level and r.getMessage() == message]


async def test_a_stuck_outbox_shows_its_age_and_alarms_at_a_bounded_rate_until_it_recovers(
    kit_db, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="clinic_platform.outbox")
    broker = Broker(tmp_path, free_port())  # not started yet: the broker is down
    topic = unique_topic()
    outbox = Outbox(kit_db.metadata, topic)
    relay = relay_for(
        kit_db,
        broker.bootstrap,
        stuck_after_seconds=1.0,
        stuck_log_every_seconds=0.5,
        age_check_seconds=0.05,
        max_attempts=2,
    )
    assert relay.oldest_unsent_age_seconds() == 0
    event = booked()
    started = time.monotonic()
    async with kit_db.db.transaction() as session:
        event_id = await outbox.add(session, event, aggregate_id=event.appointment_id)
    stopping = asyncio.Event()
    running = asyncio.create_task(relay.run(stopping))
    try:
        await eventually(lambda: relay.oldest_unsent_age_seconds() > 0, what="the age to be seen")
        stuck = "outbox events are not being published"
        # Repeated, and saying why once the first round has failed (the broker does not answer).
        await eventually(
            lambda: len(alarms := logged(caplog, logging.ERROR, stuck)) >= 3 and alarms[-1].error,
            what="the alarm, repeated, with the error",
        )
        alarms = logged(caplog, logging.ERROR, stuck)
        assert relay.oldest_unsent_age_seconds() > 1.0
        # Not before the age passed the threshold, then at most once per 0.5 s.
        assert alarms[0].oldest_unsent_age_seconds >= 1.0  # rounded to 0.1 s in the log
        assert len(alarms) <= (time.monotonic() - started - 1.0) / 0.5 + 1
        # A broker that is down is not the event's fault: nothing counted, nothing parked.
        assert await outbox_row(kit_db, event_id) == {
            "attempts": 0,
            "last_error": None,
            "parked_at": None,
            "published_at": None,
        }

        broker.start()
        await eventually(lambda: relay.published_total == 1, what="the event to be published")
        recovered = "outbox events are being published again"
        await eventually(lambda: logged(caplog, logging.INFO, recovered), what="the recovery to be logged")
        assert relay.oldest_unsent_age_seconds() == 0
        assert relay.parked_total == relay.parked_events == 0
        messages = [r.getMessage() for r in caplog.records]
        assert messages.index(recovered) > max(i for i, m in enumerate(messages) if m == stuck)
    finally:
        stopping.set()
        await running
        await relay.close()
        broker.stop()


async def test_an_event_the_broker_refuses_is_parked_and_the_later_events_are_published(
    kit_db, stack, caplog
):
    caplog.set_level(logging.INFO, logger="clinic_platform.outbox")
    topic = unique_topic()
    outbox = Outbox(kit_db.metadata, topic)
    relay = relay_for(kit_db, stack.kafka_bootstrap, max_attempts=3, age_check_seconds=0.05)
    aggregate = str(uuid.uuid4())
    before, after = booked("before", aggregate), booked("after", aggregate)
    # Over librdkafka's message.max.bytes (1,000,000): produce() refuses it with MSG_SIZE_TOO_LARGE.
    too_large = booked("x" * 1_100_000, aggregate)
    other = booked("another aggregate")
    ids = {}
    for name, event in [("before", before), ("too_large", too_large), ("after", after), ("other", other)]:
        async with kit_db.db.transaction() as session:
            ids[name] = await outbox.add(session, event, aggregate_id=event.appointment_id)

    stopping = asyncio.Event()
    running = asyncio.create_task(relay.run(stopping))
    try:
        await eventually(lambda: relay.published_total == 3, what="the events around the refused one")
        parked = await outbox_row(kit_db, ids["too_large"])
        assert parked["attempts"] == 3
        assert parked["parked_at"] is not None and parked["published_at"] is None
        assert "too large" in parked["last_error"]
        await eventually(lambda: relay.parked_events == 1, what="the parked count")
        assert relay.parked_total == 1
        assert relay.oldest_unsent_age_seconds() == 0  # parked events do not count as stuck

        alarm = logged(caplog, logging.ERROR, "outbox event parked: the broker refuses it")
        assert len(alarm) == 1
        assert alarm[0].event_id == str(ids["too_large"])
        assert alarm[0].type == "clinic.appointments.v1.AppointmentBooked"
        assert all("xxxx" not in str(r.__dict__) for r in caplog.records)  # never the payload

        # Unparked by hand (the cause not fixed): sent alone once more, and parked again at once.
        pool = await kit_db.db.pool()
        await pool.execute("UPDATE outbox SET parked_at = NULL WHERE event_id = $1", ids["too_large"])
        await eventually(
            lambda: kit_db.scalar(
                "SELECT attempts = 4 AND parked_at IS NOT NULL FROM outbox WHERE event_id = :id",
                id=ids["too_large"],
            ),
            what="the event to be parked again",
        )
        assert relay.parked_total == 2
    finally:
        stopping.set()
        await running
        await relay.close()

    records = await asyncio.to_thread(read_topic, stack.kafka_bootstrap, topic)
    published = [r.headers["ce_id"] for r in records]
    assert sorted(published) == sorted(str(ids[name]).encode() for name in ("before", "after", "other"))
    # The later event of the same aggregate overtook the parked one (see "Parking" in outbox.py).
    same_aggregate = [r.headers["ce_id"] for r in records if r.key == aggregate.encode()]
    assert same_aggregate == [str(ids["before"]).encode(), str(ids["after"]).encode()]
