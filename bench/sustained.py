"""Sustained bookings through the REST edge at fixed rates, and how far behind each booking its
invoice and its confirmation email follow.

    ./mesh up && .venv/bin/python -m bench.sustained [--rate 100 200 400] [--seconds 60]

Open loop: request i starts at t0 + i/rate whether or not earlier ones have been answered, so a
slow system meets the same load (wrk2-style; a booking's latency counts from when it was due).
Set-up is bench.booking's: fresh doctors with round-the-clock 5-minute slots, patients (with an
email address and default preferences: one confirmation email each); slots are two days ahead
or more, so no reminder falls due during the run.

Per booking, from the response's arrival (this machine's clock, which PostgreSQL shares):
- invoice: `invoice_visible` is when a 50 ms poll of the payment database first saw it;
  `invoice_stamped` uses invoices.create_time, which the handler stamps before its transaction
  commits (up to one consumer batch early).
- delivery: deliveries.send_time of the confirmation email, found through the AppointmentBooked
  event's id (notices and deliveries name the event, not the appointment; the appointments
  outbox maps one to the other).
`backlog_mid`/`backlog_end`: bookings answered but without invoice (or email sent) at half time
and at the end of the sending; `drain_after_end_s`: how long after the end the last one came.
`cpu_ms_per_booking`: per part of the stack, sending and draining; `other_load_cores`: the rest
of the machine meanwhile.

A rate passes when every booking succeeded, p99 of invoice_visible and delivery are <= 1 s, and
the backlog did not grow (everything done within 1 s of the end). Rates run in the order given
and stop at the first failure (its backlog would spoil the next; --keep-going runs them all).
Prints one JSON line per rate."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp

from bench.booking import setup, slot_times
from bench.common import CpuMeter, connect, emit, lag_summary, local_stack, percentile
from clinic.appointments.v1 import events_pb2

BOOKED = events_pb2.AppointmentBooked.DESCRIPTOR.full_name
LIMIT_S = 1.0  # p99 lag allowed, and how soon after the end the last invoice and email may come


@dataclass
class Booking:
    doctor_id: str
    start: str
    token: str
    due: float = 0.0  # perf_counter when the request was due
    latency: float = 0.0
    status: int = 0
    answered: float = 0.0  # wall clock (time.time) when its response arrived
    appointment_id: uuid.UUID | None = None
    invoice_seen: float | None = None  # wall clock of the poll that first saw its invoice
    invoice_stamped: float | None = None
    sent: float | None = None
    error: str = ""


def subject(token: str) -> str:
    """The user id in an access token (no verification needed: we just got it from login)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]


async def book(http: aiohttp.ClientSession, booking: Booking, unbilled: dict) -> None:
    body = {"doctorId": booking.doctor_id, "startTime": booking.start, "visitType": "QUICK"}
    try:
        async with http.post(
            "/v1/appointments", json=body, headers={"authorization": f"Bearer {booking.token}"}
        ) as reply:
            text = await reply.text()
            booking.status = reply.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        text, booking.status = repr(exc), -1
    booking.answered = time.time()
    booking.latency = time.perf_counter() - booking.due
    if booking.status == 200:
        booking.appointment_id = uuid.UUID(json.loads(text)["appointment"]["id"])
        unbilled[booking.appointment_id] = booking
    else:
        booking.error = f"{booking.status} {text[:100]}"


async def send_at_rate(http: aiohttp.ClientSession, bookings: list[Booking], rate: float, unbilled) -> None:
    """Start booking i at t0 + i/rate, never waiting for answers (open loop)."""
    t0 = time.perf_counter()
    tasks = []
    for i, booking in enumerate(bookings):
        booking.due = t0 + i / rate
        delay = booking.due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(book(http, booking, unbilled)))
    await asyncio.gather(*tasks)


async def watch_invoices(conn, unbilled: dict, until: asyncio.Event, deadline: float) -> None:
    """Every 50 ms, note which of the answered bookings still `unbilled` have their invoice visible
    now; once `until` is set, go on until none is left or the deadline passes."""
    while time.monotonic() < deadline:
        if not unbilled and until.is_set():
            return
        if unbilled:
            asked = time.time()
            rows = await conn.fetch(
                "SELECT appointment_id, create_time FROM invoices WHERE appointment_id = ANY($1::uuid[])",
                list(unbilled),
            )
            for row in rows:
                booking = unbilled.pop(row["appointment_id"])
                booking.invoice_seen, booking.invoice_stamped = asked, row["create_time"].timestamp()
        await asyncio.sleep(0.05)


async def wait_for_emails(appointments, notification, booked: list[Booking], mark: int, deadline: float):
    """Find each booking's AppointmentBooked event id in the appointments outbox (rows after
    `mark`), then poll until its confirmation email is SENT or the deadline passes."""
    by_appointment = {str(b.appointment_id): b for b in booked}
    rows = await appointments.fetch(
        "SELECT aggregate_id, event_id FROM outbox"
        " WHERE id > $1 AND event_type = $2 AND aggregate_id = ANY($3::text[])",
        mark,
        BOOKED,
        list(by_appointment),
    )
    by_event = {r["event_id"]: by_appointment[r["aggregate_id"]] for r in rows}
    while time.monotonic() < deadline:
        pending = [e for e, b in by_event.items() if b.sent is None]
        if not pending:
            return
        sent = await notification.fetch(
            "SELECT source_event_id, send_time FROM deliveries WHERE source_event_id = ANY($1::uuid[])"
            " AND channel = 'EMAIL' AND status = 'SENT'",
            pending,
        )
        for row in sent:
            by_event[row["source_event_id"]].sent = row["send_time"].timestamp()
        await asyncio.sleep(0.1)


def backlog(booked: list[Booking], done: str, at: float) -> int:
    """Bookings answered by `at` (wall clock) whose `done` time was later (or never)."""
    return sum(1 for b in booked if b.answered <= at and (getattr(b, done) or float("inf")) > at)


async def run_rate(stack, http, conns, bookings: list[Booking], args, *, rate: float) -> dict:
    meter = CpuMeter(stack)
    mark = await conns["appointments"].fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    sending, unbilled = asyncio.Event(), {}
    deadline = time.monotonic() + args.seconds + args.drain_timeout
    watcher = asyncio.create_task(watch_invoices(conns["payment"], unbilled, sending, deadline))
    started = time.time()
    await send_at_rate(http, bookings, rate, unbilled)
    ended = time.time()
    sending.set()
    booked = [b for b in bookings if b.appointment_id]
    await wait_for_emails(conns["appointments"], conns["notification"], booked, mark, deadline)
    await watcher
    latencies = [b.latency for b in bookings]
    invoice_visible = [b.invoice_seen - b.answered for b in booked if b.invoice_seen]
    invoice_stamped = [b.invoice_stamped - b.answered for b in booked if b.invoice_stamped]
    delivery = [b.sent - b.answered for b in booked if b.sent]
    middle = started + (ended - started) / 2
    result = {
        "benchmark": "sustained",
        "rate": rate,
        "seconds": args.seconds,
        "bookings": len(bookings),
        "achieved_per_second": round(len(bookings) / (ended - started), 1),
        "errors": len(bookings) - len(booked),
        "booking_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "booking_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        **lag_summary("invoice_visible", invoice_visible),
        **lag_summary("invoice_stamped", invoice_stamped),
        **lag_summary("delivery", delivery),
        "missing_invoices": len(booked) - len(invoice_visible),
        "missing_deliveries": len(booked) - len(delivery),
        **meter.result(per=len(bookings), unit="booking"),
    }
    for name, done in (("invoice", "invoice_seen"), ("delivery", "sent")):
        finished = [getattr(b, done) for b in booked]
        result[f"{name}_backlog_mid"] = backlog(booked, done, middle)
        result[f"{name}_backlog_end"] = backlog(booked, done, ended)
        result[f"{name}_drain_after_end_s"] = (
            round(max(0.0, max(finished) - ended), 2) if booked and None not in finished else None
        )
    result["passed"] = bool(
        result["errors"] == 0
        and not result["missing_invoices"]
        and not result["missing_deliveries"]
        and result["invoice_visible_p99_ms"] <= LIMIT_S * 1000
        and result["delivery_p99_ms"] <= LIMIT_S * 1000
        and result["invoice_drain_after_end_s"] <= LIMIT_S
        and result["delivery_drain_after_end_s"] <= LIMIT_S
    )
    if result["errors"]:
        result["first_errors"] = sorted({b.error for b in bookings if b.error})[:3]
    return emit(result)


async def wait_until_known(notification, patient_ids: list[str]) -> None:
    """Notification learns of new users from events: book only once it knows every patient, or the
    first confirmations would wait for that (and count it as lag)."""
    for _ in range(300):
        known = await notification.fetchval(
            "SELECT count(*) FROM recipients WHERE id = ANY($1::uuid[])", patient_ids
        )
        if known == len(patient_ids):
            return
        await asyncio.sleep(0.1)
    raise SystemExit("notification did not learn of the benchmark's patients within 30 s")


async def main(args) -> None:
    stack = local_stack()
    doctor_ids, tokens = await setup(args.doctors, args.patients)
    conns = {name: await connect(stack, name) for name in ("appointments", "payment", "notification")}
    try:
        await wait_until_known(conns["notification"], [subject(t) for t in tokens])
        zone = ZoneInfo("Europe/Berlin")
        times = slot_times(datetime.now(zone).date() + timedelta(days=2), zone)
        connector = aiohttp.TCPConnector(limit=args.connections)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(args.edge, connector=connector, timeout=timeout) as http:
            for rate in args.rate:
                # Booking k: doctor k % D at the (k // D)-th slot for patient k % P. With P >= D
                # a patient never has two bookings at one time.
                count = int(rate * args.seconds)
                timeline = [next(times) for _ in range(-(-count // len(doctor_ids)))]
                bookings = [
                    Booking(
                        doctor_ids[k % len(doctor_ids)],
                        timeline[k // len(doctor_ids)].isoformat().replace("+00:00", "Z"),
                        tokens[k % len(tokens)],
                    )
                    for k in range(count)
                ]
                result = await run_rate(stack, http, conns, bookings, args, rate=rate)
                if not result["passed"] and not args.keep_going:
                    break
    finally:
        for conn in conns.values():
            await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, nargs="+", default=[100, 200, 400], help="bookings/s")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--drain-timeout", type=float, default=300, help="seconds after the end, at most")
    parser.add_argument("--keep-going", action="store_true", help="try every rate, even after a failure")
    parser.add_argument("--doctors", type=int, default=8)
    parser.add_argument("--patients", type=int, default=64, help="at least --doctors")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--edge", default="http://127.0.0.1:8080")
    args = parser.parse_args()
    if args.patients < args.doctors:
        parser.error("--patients must be at least --doctors")
    asyncio.run(main(args))
