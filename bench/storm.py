"""Conflict storm through the REST edge: many patients race for a few slots, driven by wrk.

    ./mesh up && .venv/bin/python -m bench.storm [--attempts 10000] [--slots 50]

Set-up as in bench.booking (over gRPC): one fresh doctor with round-the-clock 5-minute slots and
--patients patients with their access tokens. The plan (the first --slots slots two days ahead,
as booking bodies, and the tokens) goes to a temporary file for bench/storm.lua; wrk (a C load
generator: apt-get install wrk) sends --attempts bookings, each for a random slot and a random
patient, over --connections connections, for at most --max-seconds.

Exactly one booking per slot may succeed and every other attempt must be a 409. The run checks
that in wrk's answers and in the appointments database, and prints one JSON line: latencies are
wrk's (with the few GET /healthz of storm.lua's last moments), CPU per attempt is per part of the
stack ("bench" is wrk). The target is >= 1,000 attempts/s with p99 <= 250 ms. (The edge admits
2,000 requests/s in all; more would be answered 429.)"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.booking import setup, slot_times
from bench.common import CpuMeter, connect, emit, local_stack

SCRIPT = Path(__file__).with_name("storm.lua")


def run_wrk(plan: Path, args) -> dict:
    """Run wrk with the storm script; interrupt it once every thread has stopped (it would run for
    all of -d), and read the line "STORM <JSON>" its done() prints."""
    share = -(-args.attempts // args.threads)
    command = [
        *("wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.max_seconds}s"),
        *("--timeout", "10s", "--latency", "-s", str(SCRIPT), args.edge, "--", str(plan), str(share)),
    ]
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # noqa: S603
    output, stopped = [], 0
    for line in wrk.stdout:  # ends when wrk exits: after -d at the latest
        output.append(line)
        stopped += line.startswith("STOPPED")
        if stopped == args.threads:
            wrk.send_signal(signal.SIGINT)
            stopped = -1
    wrk.wait(30)
    storm = next((x for x in output if x.startswith("STORM ")), None)
    if wrk.returncode or storm is None:
        raise SystemExit(f"wrk failed ({wrk.returncode}): {''.join(output)}")
    return json.loads(storm.removeprefix("STORM "))


async def main(args) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    stack = local_stack()
    (doctor_id,), tokens = await setup(1, args.patients)
    zone = ZoneInfo("Europe/Berlin")
    starts = list(islice(slot_times(datetime.now(zone).date() + timedelta(days=2), zone), args.slots))
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as folder:
        plan = Path(folder) / "plan.txt"
        lines = [
            "slot "
            + json.dumps({"doctorId": doctor_id, "startTime": start.isoformat(), "visitType": "QUICK"})
            for start in starts
        ]
        plan.write_text("\n".join(lines + [f"token {token}" for token in tokens]) + "\n")
        meter = CpuMeter(stack)
        storm = await asyncio.to_thread(run_wrk, plan, args)
        cpu = meter.result(per=storm["won"] + storm["conflicts"] + storm["other"], unit="attempt")
    appointments = await connect(stack, "appointments")
    try:
        booked = await appointments.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT start_time) AS slots FROM calendar_entries"
            " WHERE doctor_id = $1::uuid AND kind = 'APPOINTMENT' AND status = 'CONFIRMED'",
            doctor_id,
        )
    finally:
        await appointments.close()
    attempts = storm["won"] + storm["conflicts"] + storm["other"]
    result = {
        "benchmark": "storm",
        "attempts": attempts,
        "slots": args.slots,
        "per_second": round(attempts / storm["duration_s"], 1),
        "p50_ms": storm["p50_ms"],
        "p99_ms": storm["p99_ms"],
        "max_ms": storm["max_ms"],
        "succeeded": storm["won"],
        "conflicts_409": storm["conflicts"],
        "other_answers": storm["other"],
        "socket_errors": storm["socket_errors"],
        "timeouts": storm["timeouts"],
        "booked_in_database": booked["n"],
        "slots_booked_in_database": booked["slots"],
        "connections": args.connections,
        **cpu,
    }
    result["correct"] = (
        storm["won"] == booked["n"] == booked["slots"] == args.slots
        and storm["conflicts"] == attempts - args.slots
        and not storm["timeouts"]
    )
    result["passed"] = result["correct"] and result["per_second"] >= 1000 and result["p99_ms"] <= 250
    if storm["other_statuses"]:
        result["other_statuses"] = storm["other_statuses"].split()[:10]
    emit(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attempts", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=50)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seconds", type=int, default=60)
    parser.add_argument("--edge", default="http://127.0.0.1:8080")
    asyncio.run(main(parser.parse_args()))
