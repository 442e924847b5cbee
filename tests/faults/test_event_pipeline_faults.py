"""Both consumers of bookings killed (SIGKILL) in the middle of a 5,000-booking load: once they
are back, every booking has exactly one invoice and one confirmation delivery per channel."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

from tests.support.clinic import book_many, doctor_with_schedule, future_day
from tests.support.db import fetch
from tests.support.identity import Edge
from tests.support.polling import until

DOCTORS, PATIENTS, PER_PATIENT = 25, 50, 100  # 5,000 five-minute bookings on one day
QUICK = [{"code": "QUICK", "name": "Quick", "durationMinutes": 5}]
BOOKED = "clinic.appointments.v1.AppointmentBooked"


def invoice_count(stack) -> int:
    return fetch(stack.database_urls["payment"], "SELECT count(*) FROM invoices")[0][0]


def test_payment_and_notification_killed_during_5000_bookings_end_with_one_invoice_and_delivery_each(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctors = [
        doctor_with_schedule(edge, admin, slot_minutes=5, visits=QUICK).user_id for _ in range(DOCTORS)
    ]
    tokens = [edge.register_patient().access_token for _ in range(PATIENTS)]
    edge.close()
    consumers = [mesh.service("payment"), mesh.service("notification")]
    invoices_before = invoice_count(mesh)
    killed = threading.Event()

    def kill_when_invoices_flow() -> None:
        until(lambda: invoice_count(mesh) >= invoices_before + 200, within=120, what="invoices to flow")
        for service in consumers:
            service.kill()  # SIGKILL: no draining, no final offset commit, deliveries mid-send
        killed.set()

    killer = threading.Thread(target=kill_when_invoices_flow)
    killer.start()
    try:
        booked = asyncio.run(book_many(mesh, doctors, tokens, per_patient=PER_PATIENT, day=future_day(90)))
    finally:
        killer.join()
        for service in consumers:
            service.start()

    assert killed.is_set()
    appointment_ids = list(booked)
    assert len(appointment_ids) == PATIENTS * PER_PATIENT

    def invoices() -> Counter:
        rows = fetch(
            mesh.database_urls["payment"],
            "SELECT appointment_id::text FROM invoices WHERE appointment_id = ANY($1::uuid[])",
            appointment_ids,
        )
        return Counter(r[0] for r in rows)

    until(lambda: len(invoices()) == len(appointment_ids), within=180, what="an invoice for every booking")
    assert set(invoices().values()) == {1}

    # Each booking's AppointmentBooked event id, from the appointments service's outbox.
    events = dict(
        fetch(
            mesh.database_urls["appointments"],
            "SELECT event_id::text, aggregate_id FROM outbox"
            " WHERE event_type = $1 AND aggregate_id = ANY($2)",
            BOOKED,
            appointment_ids,
        )
    )
    assert sorted(events.values()) == sorted(appointment_ids)

    def sent() -> list:
        return fetch(
            mesh.database_urls["notification"],
            "SELECT source_event_id::text, channel, status FROM deliveries"
            " WHERE source_event_id = ANY($1::uuid[]) AND event_type = 'APPOINTMENT_BOOKED'",
            list(events),
        )

    def all_sent() -> list | None:
        rows = sent()
        per_booking = {r[0] for r in rows if r[2] == "SENT"}
        return rows if len(per_booking) == len(events) and all(r[2] == "SENT" for r in rows) else None

    rows = until(all_sent, within=240, what="a sent confirmation for every booking")
    per_channel = Counter((r[0], r[1]) for r in rows)
    assert set(per_channel.values()) == {1}, "a booking got two deliveries on one channel"
    assert {channel for _, channel in per_channel} == {"EMAIL"}  # what new patients choose by default
