"""Consumer drain rate: how fast a consumer works off a backlog of AppointmentBooked events.

    ./mesh up && .venv/bin/python -m bench.drain [--events 100000] [--mode kit services] [--together]

kit       the kit's EventConsumer with a handler that does nothing, in this process, on a fresh
          database and a topic of its own: what the kit itself costs per event (decoding, the
          inbox row, transactions, offsets), without any service's work.
services  stops payment and notification, puts N events on clinic.appointments.v1.events, then
          starts them again, one after the other (or both at once with --together), and times
          each until its inbox holds all N. Per event, payment makes an invoice (and an
          InvoiceCreated outbox row); notification schedules a reminder and records a notice
          and the source event.

The events are real AppointmentBooked messages (CloudEvents binary mode, keyed by appointment id)
for a few patients no user has, 30+ days ahead. Unknown patients keep the measurement on the
consumer: notification records exactly the rows it records for a known patient, but its
dispatcher cannot fan the notices out into N emails (that would measure SMTP and the local
mailbox, and leave N mails behind); no reminder falls due during the run. Afterwards the bench
deletes the rows it caused (--keep leaves them) and makes sure both services run again.

`per_second` counts from the first inbox row's timestamp (its transaction's start) to the moment
a 50 ms poll saw the last one, both on the database's clock, so start-up and the consumer group's
join are not counted (`wall_s` includes them). `cpu_ms_per_event` is per part of the stack (in
kit mode "bench" is the consumer itself); `other_load_cores` what the rest of the machine used.
Prints one JSON line for each production of the backlog and one per consumer."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from confluent_kafka import Producer

from bench.common import CpuMeter, connect, emit, local_stack
from clinic.appointments.v1 import events_pb2
from clinic_platform import events
from clinic_platform.consumer import EventConsumer
from clinic_platform.convert import timestamp
from clinic_platform.kafka import ensure_topics, producer_config
from local_stack.stack import Stack
from tests.support.kit import KitDatabase

BOOKED = events_pb2.AppointmentBooked.DESCRIPTOR.full_name
TARGET_PER_SECOND = 2000


@dataclass
class Backlog:
    messages: list[tuple[list, bytes, bytes]] = field(default_factory=list)
    event_ids: list[uuid.UUID] = field(default_factory=list)
    appointment_ids: list[uuid.UUID] = field(default_factory=list)
    patient_ids: list[uuid.UUID] = field(default_factory=list)
    last_of_partition: dict[int, uuid.UUID] = field(default_factory=dict)  # filled by produce()


def make_backlog(n: int, patients: int = 50) -> Backlog:
    backlog = Backlog(patient_ids=[uuid.uuid4() for _ in range(patients)])
    doctor = str(uuid.uuid4())
    now = datetime.now(UTC)
    first = now.replace(second=0, microsecond=0) + timedelta(days=30)
    for k in range(n):
        appointment_id, event_id = uuid.uuid4(), uuid.uuid4()
        start = first + timedelta(minutes=5 * k)
        event = events_pb2.AppointmentBooked(
            appointment_id=str(appointment_id),
            version=1,
            patient_id=str(backlog.patient_ids[k % patients]),
            doctor_id=doctor,
            start_time=timestamp(start),
            end_time=timestamp(start + timedelta(minutes=5)),
            visit_type="QUICK",
            book_time=timestamp(now),
        )
        backlog.messages.append(
            events.encode(
                event_id=str(event_id),
                event_type=BOOKED,
                source=events.source_for("appointments"),
                time=now,
                key=str(appointment_id),
                payload=event.SerializeToString(),
            )
        )
        backlog.event_ids.append(event_id)
        backlog.appointment_ids.append(appointment_id)
    return backlog


def produce(bootstrap: str, topic: str, backlog: Backlog) -> None:
    """Put the backlog on `topic` and wait until the broker has every record (blocking)."""
    # The kit's own producer settings: whatever batching it trusts the broker with. (Whether every
    # record was stored shows in the result: `applied` counts the inbox rows of this backlog.)
    producer = Producer(producer_config(bootstrap, "bench-drain"))
    failed: list = []
    reported = 0
    backlog.last_of_partition.clear()

    def delivered(error, msg, event_id: uuid.UUID) -> None:
        nonlocal reported
        reported += 1
        if error:
            failed.append(error)
        else:  # reports come in produce order per partition
            backlog.last_of_partition[msg.partition()] = event_id

    started = time.perf_counter()
    for sent, ((headers, key, value), event_id) in enumerate(
        zip(backlog.messages, backlog.event_ids, strict=True)
    ):
        # At most 1,000 records waiting: a queued record's 5 s delivery timeout runs while it waits,
        # and a broker taking one record per request cannot take 100,000 in 5 s. Every record is
        # reported (delivered or timed out) within that timeout, so this wait ends.
        while sent - reported >= 1000:
            producer.poll(0.05)
        producer.produce(
            topic, value, key, headers=headers, on_delivery=lambda e, m, i=event_id: delivered(e, m, i)
        )
        producer.poll(0)
    left = producer.flush(120)
    elapsed = time.perf_counter() - started
    if failed or left:
        lost = len(failed) + left
        raise SystemExit(f"{lost} of {len(backlog.messages)} events not delivered: {failed[:1]}")
    emit(
        {
            "benchmark": "drain_produce",
            "topic": topic,
            "events": len(backlog.messages),
            "per_second": round(len(backlog.messages) / elapsed, 1),
        }
    )


async def wait_for_inbox(conn: asyncpg.Connection, backlog: Backlog, deadline: float):
    """Wait until the inbox holds the whole backlog (or the deadline passes); returns how many it
    holds, when the first arrived (its transaction's start) and when the wait saw the last.

    Polls every 50 ms for the last event of each partition only (a consumer works a partition in
    order), which costs the database next to nothing; counting 100,000 rows would not."""
    lasts = list(backlog.last_of_partition.values())
    count = "SELECT count(*) FROM inbox WHERE event_id = ANY($1::uuid[])"
    while time.monotonic() < deadline:
        if await conn.fetchval(count, lasts) == len(lasts):
            break
        await asyncio.sleep(0.05)
    done = await conn.fetchval("SELECT clock_timestamp()")
    row = await conn.fetchrow(
        count.replace("count(*)", "count(*) AS n, min(received_at) AS first"), backlog.event_ids
    )
    return row["n"], row["first"], done


def result(consumer: str, seen, n: int, wall_s: float, meter: CpuMeter, **extra) -> dict:
    applied, first, done = seen
    drain_s = (done - first).total_seconds() if applied else 0.0
    return {
        "benchmark": "drain",
        "consumer": consumer,
        "events": n,
        "applied": applied,
        "complete": applied >= n,
        "per_second": round(applied / drain_s, 1) if drain_s else None,
        "drain_s": round(drain_s, 1),
        "wall_s": round(wall_s, 1),
        "target_per_second": TARGET_PER_SECOND,
        **extra,
        **meter.result(per=applied, unit="event"),
    }


async def nothing(_session, _event, _envelope) -> None:
    """The kit mode's handler: the consumer's own work is all there is."""


async def kit_mode(stack: Stack, backlog: Backlog, args) -> None:
    db = await KitDatabase(stack.postgres_admin_url, stack.ports.postgres).create()
    topic = f"clinic.benchdrain{uuid.uuid4().hex[:8]}.v1.events"
    try:
        await asyncio.to_thread(ensure_topics, stack.kafka_bootstrap, [topic, events.dlq_for(topic)])
        await asyncio.to_thread(produce, stack.kafka_bootstrap, topic, backlog)
        consumer = EventConsumer(
            db.db,
            bootstrap=stack.kafka_bootstrap,
            group=f"bench-drain-{uuid.uuid4().hex[:8]}",
            topics=[topic],
            handlers={events_pb2.AppointmentBooked: nothing},
        )
        conn = await asyncpg.connect(db.url.replace("postgresql+asyncpg://", "postgresql://"))
        stopping = asyncio.Event()
        started, meter = time.monotonic(), CpuMeter(stack)  # "bench" is this process: the consumer
        task = asyncio.create_task(consumer.run(stopping))
        try:
            seen = await wait_for_inbox(conn, backlog, started + args.timeout)
            wall = time.monotonic() - started
            emit(result("kit", seen, args.events, wall, meter, handler="nothing"))
        finally:
            stopping.set()
            await asyncio.wait_for(task, 30)
            await conn.close()
    finally:
        await db.drop()


SERVICES = ["payment", "notification"]


async def services_mode(stack: Stack, backlog: Backlog, args) -> None:
    conns = {name: await connect(stack, name) for name in SERVICES}
    try:
        for name in SERVICES:
            stack.service(name).stop()
        await asyncio.to_thread(produce, stack.kafka_bootstrap, events.topic_for("appointments"), backlog)
        for group in [SERVICES] if args.together else [[name] for name in SERVICES]:
            await drain(stack, conns, group, backlog, args)
    finally:
        for name in SERVICES:  # leave the stack as we found it, whatever happened
            stack.service(name).start()
        if not args.keep:
            await clean_up(conns, backlog)
        for conn in conns.values():
            await conn.close()


async def drain(stack: Stack, conns: dict, group: list[str], backlog: Backlog, args) -> None:
    processes = [stack.service(name) for name in group]
    started = time.monotonic()
    for process in processes:
        process.launch()
    for process in processes:
        process.wait_ready()
    meter = CpuMeter(stack)  # from here: start-up (imports, migrations) is not the drain's cost

    async def one(process) -> None:
        conn = conns[process.name]
        seen = await wait_for_inbox(conn, backlog, started + args.timeout)
        wall = time.monotonic() - started
        # Its own events (payment's InvoiceCreated) may still be on their way out: part of its work.
        outbox = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        line = result(process.name, seen, args.events, wall, meter, together=len(group) > 1)
        line["outbox_unpublished_at_end"] = outbox
        line["outbox_published_after_s"] = await outbox_empty(conn, started + args.timeout)
        emit(line)

    await asyncio.gather(*(one(p) for p in processes))


async def outbox_empty(conn: asyncpg.Connection, deadline: float) -> float | None:
    """Seconds until the service's outbox relay has published everything (None: not by the deadline),
    so that the next consumer does not share the cores with this one's relay."""
    started = time.monotonic()
    while await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.5)
    return round(time.monotonic() - started, 1)


async def clean_up(conns: dict, backlog: Backlog) -> None:
    """Delete what the backlog caused: invoices (and their published InvoiceCreated rows), reminders,
    notices, kept source events and inbox rows, so the local stack does not carry them around."""
    events_, appointments, patients = backlog.event_ids, backlog.appointment_ids, backlog.patient_ids
    payment, notification = conns["payment"], conns["notification"]
    await payment.execute(
        "DELETE FROM outbox WHERE aggregate_id IN"
        " (SELECT id::text FROM invoices WHERE appointment_id = ANY($1::uuid[]))",
        appointments,
    )
    await payment.execute("DELETE FROM invoices WHERE appointment_id = ANY($1::uuid[])", appointments)
    await notification.execute("DELETE FROM notices WHERE recipient_id = ANY($1::uuid[])", patients)
    await notification.execute("DELETE FROM reminders WHERE patient_id = ANY($1::uuid[])", patients)
    await notification.execute("DELETE FROM source_events WHERE event_id = ANY($1::uuid[])", events_)
    for conn in conns.values():
        await conn.execute("DELETE FROM inbox WHERE event_id = ANY($1::uuid[])", events_)


async def main(args) -> None:
    stack = local_stack()
    backlog = make_backlog(args.events)
    if "kit" in args.mode:
        await kit_mode(stack, backlog, args)
    if "services" in args.mode:
        await services_mode(stack, backlog, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--mode", nargs="+", choices=["kit", "services"], default=["kit", "services"])
    parser.add_argument("--together", action="store_true", help="start both consumers at once")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per drain at most")
    parser.add_argument("--keep", action="store_true", help="keep the rows the backlog caused")
    asyncio.run(main(parser.parse_args()))
