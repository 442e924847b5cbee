"""Billing under faults: the payment service killed in the middle of a stream of appointment
events, and a poison event on the appointments topic."""

from __future__ import annotations

import asyncio
import threading
import uuid

from clinic_platform.events import dlq_for
from tests.support.clinic import at, book_many, doctor_with_schedule, future_day
from tests.support.db import fetch
from tests.support.events import booked, encoded, produce_raw
from tests.support.identity import Edge
from tests.support.kafka import read_topic
from tests.support.polling import until

PATIENTS, PER_PATIENT = 50, 10  # 500 appointments
QUICK = [{"code": "QUICK", "name": "Quick", "durationMinutes": 5}]


def invoices_of(stack, appointment_ids: list[str]) -> dict[str, list[str]]:
    rows = fetch(
        stack.database_urls["payment"],
        "SELECT appointment_id::text, status FROM invoices WHERE appointment_id = ANY($1::uuid[])",
        appointment_ids,
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row[0], []).append(row[1])
    return found


def test_the_payment_service_killed_mid_stream_ends_with_one_invoice_per_appointment_in_its_final_state(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctors = [doctor_with_schedule(edge, admin, slot_minutes=5, visits=QUICK).user_id for _ in range(2)]
    tokens = [edge.register_patient().access_token for _ in range(PATIENTS)]
    edge.close()
    payment = mesh.service("payment")
    seen: list[str] = []
    killed = threading.Event()

    def kill_when_invoices_flow() -> None:
        until(
            lambda: len(invoices_of(mesh, seen[:])) >= 40 if seen else False,
            within=60,
            what="invoices to flow",
        )
        payment.kill()  # SIGKILL: no draining, no final commit of offsets
        killed.set()

    killer = threading.Thread(target=kill_when_invoices_flow)
    seen_outcome: dict[str, bool] = {}

    async def run() -> None:
        nonlocal seen_outcome

        async def watch() -> None:  # let the killer see the ids as they are booked
            while not killed.is_set():
                seen[:] = list(seen_outcome)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        seen_outcome = await book_many(
            mesh, doctors, tokens, per_patient=PER_PATIENT, day=future_day(60), cancel_share=0.5
        )
        seen[:] = list(seen_outcome)
        await asyncio.to_thread(killed.wait, 60)
        watcher.cancel()

    killer.start()
    try:
        asyncio.run(run())
    finally:
        killer.join()
        payment.start()

    assert killed.is_set()
    assert len(seen_outcome) == PATIENTS * PER_PATIENT
    wanted = {aid: ["VOIDED" if cancelled else "PENDING"] for aid, cancelled in seen_outcome.items()}
    until(
        lambda: invoices_of(mesh, list(wanted)) == wanted,
        within=120,
        what="every appointment to have exactly one invoice in its final state",
    )


def test_a_poison_appointment_event_goes_to_the_dlq_and_the_next_events_are_invoiced(mesh):
    topic = "clinic.appointments.v1.events"
    poison = encoded(booked())
    poison = (poison[0], poison[1], b"\x08\xff\xff\xff this is not an AppointmentBooked")
    good = booked("CONSULT")
    good.start_time.FromJsonString(at(future_day(70), "10:00"))
    produce_raw(mesh.kafka_bootstrap, topic, [poison, encoded(good)])

    until(
        lambda: invoices_of(mesh, [good.appointment_id]),
        within=30,
        what="the event after the poison to be invoiced",
    )
    poison_id = dict(poison[0])["ce_id"]

    def dead_lettered():
        records = read_topic(mesh.kafka_bootstrap, dlq_for(topic))
        return [
            r for r in records if r.headers["ce_id"] == poison_id and r.headers["dlq_consumer"] == b"payment"
        ]

    (record,) = until(dead_lettered, within=30, what="the poison event in the DLQ")
    assert b"DecodeError" in record.headers["dlq_error"]
    assert invoices_of(mesh, [str(uuid.UUID(good.appointment_id))]) == {good.appointment_id: ["PENDING"]}


def test_a_cancellation_before_its_booking_and_twice_ends_voided_with_one_invoice(mesh):
    from clinic.appointments.v1 import events_pb2

    appointment = booked("CONSULT")
    appointment.start_time.FromJsonString(at(future_day(71), "10:00"))
    fields = {f: getattr(appointment, f) for f in ("appointment_id", "patient_id", "doctor_id", "visit_type")}
    cancelled = events_pb2.AppointmentCancelled(
        **fields,
        version=2,
        start_time=appointment.start_time,
        end_time=appointment.end_time,
        cancelled_by=appointment.patient_id,
    )
    # Out of order and repeated: the cancellation (twice, two deliveries of one event), then the booking.
    once = encoded(cancelled)
    produce_raw(
        mesh.kafka_bootstrap,
        "clinic.appointments.v1.events",
        [once, once, encoded(cancelled), encoded(appointment)],
    )
    until(lambda: invoices_of(mesh, [appointment.appointment_id]), within=30, what="the invoice")
    probe = booked("CONSULT")  # an event after them all: once it is invoiced, the others were handled
    probe.start_time.FromJsonString(at(future_day(72), "10:00"))
    produce_raw(mesh.kafka_bootstrap, "clinic.appointments.v1.events", [encoded(probe)])
    until(lambda: invoices_of(mesh, [probe.appointment_id]), within=30, what="the probe's invoice")
    assert invoices_of(mesh, [appointment.appointment_id]) == {appointment.appointment_id: ["VOIDED"]}
