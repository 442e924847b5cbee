"""Shared by the benchmarks: latency percentiles, a JSON line of results, and the running local
stack (its service databases, its processes' CPU)."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from local_stack.provision import database_url
from local_stack.stack import ROOT, SERVICES, Ports, Stack


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(name: str, latencies_s: list[float], elapsed_s: float, **extra) -> dict:
    ms = [x * 1000 for x in latencies_s]
    result = {
        "benchmark": name,
        "requests": len(ms),
        "per_second": round(len(ms) / elapsed_s, 1),
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        **extra,
    }
    return emit(result)


def emit(result: dict) -> dict:
    """Print one result as a JSON line."""
    print(json.dumps(result), file=sys.stdout, flush=True)
    return result


def lag_summary(prefix: str, lags_s: list[float]) -> dict:
    """p50/p99/max of lags in ms under `prefix` (None when nothing was measured)."""
    ms = [x * 1000 for x in lags_s]
    return {
        f"{prefix}_p50_ms": round(percentile(ms, 50), 1) if ms else None,
        f"{prefix}_p99_ms": round(percentile(ms, 99), 1) if ms else None,
        f"{prefix}_max_ms": round(max(ms), 1) if ms else None,
    }


def local_stack() -> Stack:
    """The running local stack (./mesh up), with its service database URLs filled in (the stack
    computes them only while it starts, from the role passwords in its state folder)."""
    stack = Stack(Path(os.environ.get("CLINIC_STATE_DIR", ROOT / "var")), Ports.from_env())
    if not stack.postgres.secrets_file.exists():
        sys.exit(f"no local stack in {stack.state_dir}: start it with ./mesh up")
    passwords = stack.postgres.passwords(SERVICES)
    stack.database_urls = {
        s: database_url(s, p, "127.0.0.1", stack.ports.postgres) for s, p in passwords.items()
    }
    return stack


async def connect(stack: Stack, service: str) -> asyncpg.Connection:
    """A connection to a service's database, as its own role (which owns its tables)."""
    return await asyncpg.connect(
        stack.database_urls[service].replace("postgresql+asyncpg://", "postgresql://")
    )


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU a process has used so far (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU time the whole machine has been busy (all cores, /proc/stat), in seconds."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _descendants() -> Callable[[int], set[int]]:
    """A function giving a process and all its descendants (e.g. PostgreSQL and its backends)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))

    def family(pid: int) -> set[int]:
        found, todo = set(), [pid]
        while todo:
            current = todo.pop()
            found.add(current)
            todo += children.get(current, [])
        return found

    return family


class CpuMeter:
    """CPU used meanwhile by each part of the local stack (PostgreSQL with its backends), by this
    benchmark (wrk included, once it has exited), and by everything else on the machine: other
    people's test stacks share these two cores, and a figure means little without that.

    `meter = CpuMeter(stack)`, measure, then `meter.result(per=n, unit="event")`."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.started = time.monotonic()
        self.busy = _busy_seconds()
        self.before = self._sample()

    def _sample(self) -> dict[str, dict[int, float]]:
        family = _descendants()
        parts = {part: family(pid) for part, pid in self.stack.status().items() if pid}
        # This process and its children (wrk), but not the services it (re)started (bench.drain).
        parts["bench"] = family(os.getpid()).difference(*parts.values())
        sample = {part: {p: cpu_seconds(p) for p in pids} for part, pids in parts.items()}
        me = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()  # + children waited for
        sample["bench"][os.getpid()] += (int(me[13]) + int(me[14])) / os.sysconf("SC_CLK_TCK")
        return sample

    def result(self, per: int = 0, unit: str = "") -> dict:
        """`other_load_cores`, and with `per`, `cpu_ms_per_<unit>` of every part that used some."""
        after, elapsed = self._sample(), time.monotonic() - self.started
        used = {
            part: sum(cpu - self.before.get(part, {}).get(pid, 0.0) for pid, cpu in pids.items())
            for part, pids in after.items()
        }
        others = _busy_seconds() - self.busy - sum(used.values())
        result: dict = {"other_load_cores": round(max(0.0, others) / elapsed, 2)}
        if per:
            ms = {part: round(seconds * 1000 / per, 3) for part, seconds in used.items()}
            biggest_first = sorted(ms.items(), key=lambda kv: -kv[1])
            result[f"cpu_ms_per_{unit}"] = {part: v for part, v in biggest_first if v >= 0.01}
        return result
