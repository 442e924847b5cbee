"""Outbox relay throughput: one record per produce request against multi-record batches.

    .venv/bin/python -m bench.outbox_relay [--events 20000] [--rounds 2] [--batch-size 500]

Needs no running stack: it starts its own PostgreSQL and broker (Tansu) on free loopback ports in
a temporary folder and stops them at the end. Each round fills the outbox with N real
AppointmentBooked events (a fresh topic of three partitions), then times the relay's rounds
(`publish_batch` until the outbox is empty): claim, produce, wait for every delivery report, mark
published. The two modes alternate, so a busy machine hurts both alike. Prints one JSON line per
round (events/s, broker and relay CPU per event) and a last line with the medians and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from clinic.appointments.v1 import events_pb2
from clinic_platform.db import Database, new_metadata
from clinic_platform.kafka import ensure_topics
from clinic_platform.outbox import Outbox, OutboxRelay
from local_stack.components import Broker
from local_stack.postgres import Postgres
from local_stack.stack import free_port

MODES = {"one_record_per_batch": True, "batched": False}


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def event() -> events_pb2.AppointmentBooked:
    booked = events_pb2.AppointmentBooked(
        appointment_id=str(uuid.uuid4()),
        version=1,
        patient_id=str(uuid.uuid4()),
        doctor_id=str(uuid.uuid4()),
        visit_type="checkup",
    )
    booked.start_time.FromDatetime(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    booked.end_time.FromDatetime(datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    return booked


async def create_database(postgres: Postgres) -> str:
    name, password = f"bench_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
    admin = await asyncpg.connect(host=str(postgres.socket_dir), port=postgres.port, user="postgres")
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        await admin.execute(f"CREATE DATABASE {name} OWNER {name}")
    finally:
        await admin.close()
    return f"postgresql+asyncpg://{name}:{password}@127.0.0.1:{postgres.port}/{name}"


async def one_round(
    db: Database, bootstrap: str, *, mode: str, events: int, batch_size: int, broker_pid: int
):
    topic = f"bench.relay{uuid.uuid4().hex[:8]}.v1.events"
    await asyncio.to_thread(ensure_topics, bootstrap, [topic], 3)
    outbox = Outbox(db.metadata, topic)
    pool = await db.pool()
    rows = [outbox.row(e, aggregate_id=e.appointment_id) for e in (event() for _ in range(events))]
    columns = list(rows[0])
    await pool.copy_records_to_table(
        "outbox", records=[tuple(r[c] for c in columns) for r in rows], columns=columns
    )
    relay = OutboxRelay(
        db, bootstrap=bootstrap, service="bench", batch_size=batch_size, one_record_per_batch=MODES[mode]
    )
    await asyncio.to_thread(relay.producer.list_topics, topic, 5)  # connected before the clock starts
    broker_cpu, own_cpu, started = cpu_seconds(broker_pid), time.process_time(), time.perf_counter()
    while await relay.publish_batch():
        pass
    elapsed = time.perf_counter() - started
    broker_cpu, own_cpu = cpu_seconds(broker_pid) - broker_cpu, time.process_time() - own_cpu
    await relay.close()
    assert relay.published_total == events, f"published {relay.published_total} of {events}"
    return {
        "benchmark": "outbox_relay",
        "mode": mode,
        "events": events,
        "batch_size": batch_size,
        "seconds": round(elapsed, 2),
        "per_second": round(events / elapsed),
        "broker_cpu_ms_per_event": round(broker_cpu * 1000 / events, 3),
        "relay_cpu_ms_per_event": round(own_cpu * 1000 / events, 3),
    }


def emit(result: dict) -> dict:
    print(json.dumps(result), flush=True)
    return result


async def main(events: int, rounds: int, batch_size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as folder:
        state = Path(folder)
        postgres, broker = Postgres(state, free_port()), Broker(state, free_port())
        postgres.init()
        postgres.start()
        db = None
        try:
            broker.start()
            db = Database(await create_database(postgres), new_metadata())
            async with db.engine.begin() as conn:
                await conn.run_sync(db.metadata.create_all)
            results: dict[str, list[float]] = {mode: [] for mode in MODES}
            for _ in range(rounds):
                for mode in MODES:
                    result = emit(
                        await one_round(
                            db,
                            broker.bootstrap,
                            mode=mode,
                            events=events,
                            batch_size=batch_size,
                            broker_pid=broker.pid,
                        )
                    )
                    results[mode].append(result["per_second"])
            one, batched = (statistics.median(results[m]) for m in MODES)
            emit(
                {
                    "benchmark": "outbox_relay_summary",
                    "one_record_per_batch_per_second": one,
                    "batched_per_second": batched,
                    "ratio": round(batched / one, 1),
                }
            )
        finally:
            if db is not None:
                await db.close()
            broker.stop()
            postgres.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    if sys.platform != "linux":
        sys.exit("reads process CPU from /proc: Linux only")
    asyncio.run(main(args.events, args.rounds, args.batch_size))
