"""Event lag on a quiet system: how long after a booking's answer its invoice is visible.

    ./mesh up && .venv/bin/python -m bench.lag [--bookings 200]

One booking at a time through the REST edge (set-up as in bench.booking: a fresh doctor with
round-the-clock 5-minute slots two days ahead, a fresh patient), then the payment database is
polled every 5 ms until the booking's invoice is there (the poll adds ~2.5 ms on average), then a
random pause of 0.2-0.5 s, so that each booking meets idle consumers at a random point of their
fetch cycle. Prints one JSON line; the target is p50 <= 60 ms and p99 <= 150 ms."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp

from bench.booking import setup, slot_times
from bench.common import CpuMeter, connect, emit, lag_summary, local_stack, percentile

POLL_S = 0.005
GIVE_UP_S = 5.0


async def invoice_lag(conn, appointment_id: str) -> float | None:
    """Seconds from now until the invoice of `appointment_id` is visible (None: not within 5 s)."""
    started = time.perf_counter()
    while time.perf_counter() - started < GIVE_UP_S:
        if await conn.fetchval("SELECT 1 FROM invoices WHERE appointment_id = $1::uuid", appointment_id):
            return time.perf_counter() - started
        await asyncio.sleep(POLL_S)
    return None


async def main(args) -> None:
    stack = local_stack()
    (doctor_id,), (token,) = await setup(1, 1)
    zone = ZoneInfo("Europe/Berlin")
    times = slot_times(datetime.now(zone).date() + timedelta(days=2), zone)  # no reminder falls due
    payment = await connect(stack, "payment")
    lags, latencies, errors, missing = [], [], [], 0
    headers = {"authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(args.edge, timeout=aiohttp.ClientTimeout(total=10)) as http:
            await asyncio.sleep(1)  # let the set-up's own events settle
            meter = CpuMeter(stack)
            for _ in range(args.bookings):
                body = {
                    "doctorId": doctor_id,
                    "startTime": next(times).isoformat().replace("+00:00", "Z"),
                    "visitType": "QUICK",
                }
                started = time.perf_counter()
                async with http.post("/v1/appointments", json=body, headers=headers) as reply:
                    answer = await reply.json()
                latencies.append(time.perf_counter() - started)
                if reply.status != 200:
                    errors.append(f"{reply.status} {answer}")
                    continue
                lag = await invoice_lag(payment, answer["appointment"]["id"])
                if lag is None:
                    missing += 1
                else:
                    lags.append(lag)
                await asyncio.sleep(random.uniform(0.2, 0.5))
    finally:
        await payment.close()
    result = {
        "benchmark": "event_lag_quiet",
        "bookings": args.bookings,
        "errors": len(errors),
        "invoices_missing_after_5s": missing,
        **lag_summary("invoice", lags),
        "booking_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "target_p50_ms": 60,
        "target_p99_ms": 150,
        **meter.result(),
    }
    result["passed"] = bool(
        not errors and not missing and result["invoice_p50_ms"] <= 60 and result["invoice_p99_ms"] <= 150
    )
    if errors:
        result["first_errors"] = errors[:3]
    emit(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bookings", type=int, default=200)
    parser.add_argument("--edge", default="http://127.0.0.1:8080")
    asyncio.run(main(parser.parse_args()))
