"""The event consumer (inbox dedupe, DLQ, offsets after effects) on real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from clinic.appointments.v1 import events_pb2
from clinic_platform import events
from clinic_platform.consumer import EventConsumer
from tests.support.events import booked, encoded, ledger_handler, produce_raw, unique_topic
from tests.support.kafka import read_topic
from tests.support.polling import eventually
from tests.support.run_consumer import CRASHED_BEFORE_COMMIT

ROOT = Path(__file__).resolve().parents[2]


def consumer_for(kit_db, bootstrap: str, topic: str, group: str | None = None, **options) -> EventConsumer:
    return EventConsumer(
        kit_db.db,
        bootstrap=bootstrap,
        group=group or f"kittest-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        handlers={events_pb2.AppointmentBooked: ledger_handler(kit_db.metadata)},
        **options,
    )


async def ledger_rows(kit_db, event_id: str | None = None) -> int:
    if event_id is None:
        return await kit_db.scalar("SELECT count(*) FROM ledger")
    return await kit_db.scalar("SELECT count(*) FROM ledger WHERE event_id = :id", id=uuid.UUID(event_id))


class Running:
    """A consumer running in the test's event loop until the block ends."""

    def __init__(self, consumer: EventConsumer) -> None:
        self.consumer = consumer
        self.stopping = asyncio.Event()

    async def __aenter__(self) -> EventConsumer:
        self.task = asyncio.create_task(self.consumer.run(self.stopping))
        return self.consumer

    async def __aexit__(self, *exc) -> None:
        self.stopping.set()
        await self.task


async def test_a_redelivered_event_is_applied_once(kit_db, stack):
    topic = unique_topic()
    event = booked()
    message = encoded(event)
    await asyncio.to_thread(produce_raw, stack.kafka_bootstrap, topic, [message, message])

    async with Running(consumer_for(kit_db, stack.kafka_bootstrap, topic)) as consumer:
        await eventually(lambda: consumer.stats.applied + consumer.stats.duplicates == 2, what="both copies")

    assert (consumer.stats.applied, consumer.stats.duplicates) == (1, 1)
    assert await ledger_rows(kit_db, dict(message[0])["ce_id"].decode()) == 1


async def test_poison_events_go_to_the_dlq_with_their_error_and_the_next_events_are_processed(kit_db, stack):
    topic = unique_topic()
    undecodable = encoded(booked())
    undecodable = (undecodable[0], undecodable[1], b"\xff\xff not protobuf")
    unknown_type = events.encode(
        event_id=str(uuid.uuid4()),
        event_type="clinic.nowhere.v1.Mystery",
        source="/clinic/x",
        time=datetime.now(UTC),
        key="k",
        payload=b"",
    )
    keeps_failing = encoded(booked("fail"))
    good = encoded(booked("after the poison"))
    await asyncio.to_thread(
        produce_raw, stack.kafka_bootstrap, topic, [undecodable, unknown_type, keeps_failing, good]
    )

    consumer = consumer_for(kit_db, stack.kafka_bootstrap, topic, max_attempts=3, retry_base_seconds=0.01)
    async with Running(consumer):
        await eventually(lambda: consumer.stats.applied == 1, what="the good event after the poison ones")

    assert consumer.stats.dead_lettered == 3
    assert await ledger_rows(kit_db) == 1  # the failing handler's writes were rolled back
    dead = await asyncio.to_thread(read_topic, stack.kafka_bootstrap, events.dlq_for(topic))
    errors = {r.headers["ce_id"]: r.headers["dlq_error"].decode() for r in dead}
    assert "DecodeError" in errors[dict(undecodable[0])["ce_id"]]
    assert "unknown event type 'clinic.nowhere.v1.Mystery'" in errors[dict(unknown_type[0])["ce_id"]]
    failing = next(r for r in dead if r.headers["ce_id"] == dict(keeps_failing[0])["ce_id"])
    assert "this event can never be applied" in failing.headers["dlq_error"].decode()
    assert failing.headers["dlq_attempts"] == b"3"
    assert failing.headers["dlq_original_topic"] == topic.encode()
    assert failing.value == keeps_failing[2]  # the event itself is kept for a replay


async def test_a_consumer_killed_before_committing_its_offset_reprocesses_without_a_second_effect(
    kit_db, stack
):
    topic = unique_topic()
    group = f"kittest-{uuid.uuid4().hex[:8]}"
    message = encoded(booked())
    event_id = dict(message[0])["ce_id"].decode()
    await asyncio.to_thread(produce_raw, stack.kafka_bootstrap, topic, [message])

    crashing = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.run_consumer",
        kit_db.url,
        stack.kafka_bootstrap,
        group,
        topic,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(crashing.wait(), 60) == CRASHED_BEFORE_COMMIT
    assert await ledger_rows(kit_db, event_id) == 1  # the effect was committed before the crash

    consumer = consumer_for(kit_db, stack.kafka_bootstrap, topic, group=group)
    async with Running(consumer):
        await eventually(lambda: consumer.stats.duplicates == 1, what="the uncommitted event to come again")

    assert consumer.stats.applied == 0
    assert await ledger_rows(kit_db, event_id) == 1
