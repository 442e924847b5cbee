"""The event consumer (inbox dedupe, DLQ, offsets after effects) on real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from clinic.appointments.v1 import events_pb2
from clinic_platform import dlq, events
from clinic_platform.consumer import EventConsumer
from tests.support.events import booked, encoded, ledger_handler, produce_raw, unique_topic
from tests.support.kafka import read_topic
from tests.support.polling import eventually
from tests.support.run_consumer import CRASHED_BEFORE_COMMIT

ROOT = Path(__file__).resolve().parents[2]


def consumer_for(
    kit_db, bootstrap: str, topic: str, group: str | None = None, handler=None, **options
) -> EventConsumer:
    """A consumer of AppointmentBooked on `topic`; the handler writes the ledger unless given."""
    return EventConsumer(
        kit_db.db,
        bootstrap=bootstrap,
        group=group or f"kittest-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        handlers={events_pb2.AppointmentBooked: handler or ledger_handler(kit_db.metadata)},
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


async def test_poison_events_go_to_the_dlq_with_their_error_unknown_types_are_skipped_and_the_rest_applied(
    kit_db, stack
):
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
        # Partitions are applied side by side: the good event need not wait for the failing one.
        await eventually(
            lambda: consumer.stats.applied == 1 and consumer.stats.dead_lettered == 2,
            what="the good event applied and the poison ones dead-lettered",
        )

    assert consumer.stats.dead_lettered == 2
    # A type no one here knows yet (a newer producer's) is skipped and counted, not dead-lettered.
    assert consumer.stats.unknown == 1
    assert await ledger_rows(kit_db) == 1  # the failing handler's writes were rolled back
    dead = await asyncio.to_thread(read_topic, stack.kafka_bootstrap, events.dlq_for(topic))
    errors = {r.headers["ce_id"]: r.headers["dlq_error"].decode() for r in dead}
    assert "DecodeError" in errors[dict(undecodable[0])["ce_id"]]
    assert dict(unknown_type[0])["ce_id"] not in errors
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


async def test_a_batch_with_a_failing_event_applies_every_event_once_in_order(kit_db, stack):
    """One aggregate's events in one batch; the sixth fails once. The five before it are not
    undone, it is retried on its own, and the ones after it follow it, in order."""
    topic = unique_topic()
    aggregate = str(uuid.uuid4())
    notes = [f"n{i}" for i in range(10)]
    messages = [encoded(booked(note, appointment_id=aggregate)) for note in notes]
    await asyncio.to_thread(produce_raw, stack.kafka_bootstrap, topic, messages)
    record = ledger_handler(kit_db.metadata)
    failed_once: list[str] = []

    async def fails_once_on_n5(session, event, envelope):
        await record(session, event, envelope)
        if event.visit_type == "n5" and not failed_once:
            failed_once.append(envelope.id)
            raise RuntimeError("a passing failure")

    consumer = consumer_for(
        kit_db, stack.kafka_bootstrap, topic, handler=fails_once_on_n5, retry_base_seconds=0.01
    )
    async with Running(consumer):
        await eventually(lambda: consumer.stats.applied == 10, what="all ten events")

    assert failed_once
    async with kit_db.db.engine.connect() as conn:
        applied = (await conn.execute(text("SELECT note FROM ledger ORDER BY seq"))).scalars().all()
    assert applied == notes
    assert consumer.stats.dead_lettered == 0


async def test_a_dead_lettered_event_is_applied_once_after_the_fix_and_a_replay(kit_db, stack):
    topic = unique_topic()
    event = booked("needs the fix")
    message = encoded(event)
    event_id = dict(message[0])["ce_id"].decode()
    await asyncio.to_thread(produce_raw, stack.kafka_bootstrap, topic, [message])
    record = ledger_handler(kit_db.metadata)
    fixed = False

    async def broken_until_fixed(session, event, envelope):
        if not fixed:
            raise RuntimeError("a bug in this release")
        await record(session, event, envelope)

    consumer = consumer_for(
        kit_db,
        stack.kafka_bootstrap,
        topic,
        handler=broken_until_fixed,
        max_attempts=2,
        retry_base_seconds=0.01,
    )
    async with Running(consumer):
        await eventually(lambda: consumer.stats.dead_lettered == 1, what="the event in the DLQ")
        letters = await asyncio.to_thread(dlq.list_letters, stack.kafka_bootstrap, topic, idle_seconds=1)
        assert [(letter.event_id, letter.attempts) for letter in letters] == [(event_id, "2")]
        assert "a bug in this release" in letters[0].error

        fixed = True  # the release with the fix
        replayed = await asyncio.to_thread(dlq.replay, stack.kafka_bootstrap, topic, idle_seconds=1)
        assert [letter.event_id for letter in replayed] == [event_id]
        await eventually(lambda: consumer.stats.applied == 1, what="the replayed event")

        # A second replay finds nothing new: the first one's position was committed.
        assert await asyncio.to_thread(dlq.replay, stack.kafka_bootstrap, topic, idle_seconds=1) == []

    assert await ledger_rows(kit_db, event_id) == 1
