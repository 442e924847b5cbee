"""Shared by the benchmarks: latency percentiles and a JSON line of results."""

from __future__ import annotations

import json
import statistics
import sys


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
    print(json.dumps(result), file=sys.stdout, flush=True)
    return result
