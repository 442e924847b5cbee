"""Notifications under faults: the SMTP server down while events arrive, the notification service
killed in the middle of 500 bookings, and poison events on a topic it reads."""

from __future__ import annotations

import asyncio
import threading

from clinic_platform.events import dlq_for
from tests.support.clinic import at, book_many, doctor_with_schedule, future_day
from tests.support.db import fetch
from tests.support.events import booked, encoded, produce_raw
from tests.support.identity import Edge
from tests.support.kafka import read_topic
from tests.support.notifications import deliveries, known_recipient, mail, texts, unique_phone, wait_for_mail
from tests.support.polling import until

QUICK = [{"code": "QUICK", "name": "Quick", "durationMinutes": 5}]
PATIENTS, PER_PATIENT = 50, 10  # 500 bookings


def test_mail_sent_while_the_smtp_server_is_down_arrives_once_when_it_is_back(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctor = doctor_with_schedule(edge, admin)
    patient = edge.register_patient()
    known_recipient(edge, mesh, patient)
    mesh.mailbox.stop()
    try:
        for days in (80, 81, 82):
            body = {
                "doctorId": doctor.user_id,
                "startTime": at(future_day(days), "10:00"),
                "visitType": "CONSULT",
            }
            assert edge.http.post("/v1/appointments", json=body, headers=patient.auth).status_code == 200

        def all_tried():
            rows = deliveries(mesh, patient.user_id, "APPOINTMENT_BOOKED")
            failed_once = [r for r in rows if r["status"] == "PENDING" and "SMTP" in r["failure_reason"]]
            return len(rows) == 3 and len(failed_once) == 3

        until(all_tried, within=30, what="every confirmation to have failed once and be kept for a retry")
    finally:
        mesh.mailbox.start()

    wait_for_mail(mesh, patient.email, "is confirmed", count=3, within=60)
    until(
        lambda: all(r["status"] == "SENT" for r in deliveries(mesh, patient.user_id)),
        within=20,
        what="the delivery log to show them sent",
    )
    assert len(mail(mesh, patient.email, "is confirmed")) == 3
    assert len(deliveries(mesh, patient.user_id)) == 3
    edge.close()


def sent_confirmations(stack, recipients: list[str]) -> int:
    rows = fetch(
        stack.database_urls["notification"],
        "SELECT count(*) FROM deliveries WHERE recipient_id = ANY($1::uuid[]) AND status = 'SENT'",
        recipients,
    )
    return rows[0][0]


def test_the_notification_service_killed_during_500_bookings_confirms_each_once_per_channel(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctors = [doctor_with_schedule(edge, admin, slot_minutes=5, visits=QUICK).user_id for _ in range(2)]
    phones = [unique_phone() if i % 2 == 0 else "" for i in range(PATIENTS)]  # half also want SMS
    patients = [edge.register_patient(**({"phoneNumber": phone} if phone else {})) for phone in phones]
    for patient in patients:
        known_recipient(edge, mesh, patient)
    edge.close()
    ids = [p.user_id for p in patients]
    notification = mesh.service("notification")
    booked_ids: dict[str, bool] = {}

    def book() -> None:
        tokens = [p.access_token for p in patients]
        booked_ids.update(
            asyncio.run(book_many(mesh, doctors, tokens, per_patient=PER_PATIENT, day=future_day(90)))
        )

    booking = threading.Thread(target=book)
    booking.start()
    try:
        until(lambda: sent_confirmations(mesh, ids) >= 40, within=90, what="confirmations to flow")
        notification.kill()  # SIGKILL: no draining, offsets and sends cut off wherever they are
    finally:
        booking.join()
        notification.start()
    assert len(booked_ids) == PATIENTS * PER_PATIENT

    def everyone_confirmed() -> bool:
        return all(
            len(mail(mesh, p.email, "is confirmed")) == PER_PATIENT
            and (not phone or len(texts(mesh, phone, "is confirmed")) == PER_PATIENT)
            for p, phone in zip(patients, phones, strict=True)
        )

    until(everyone_confirmed, within=180, what="every booking to be confirmed by every chosen channel")

    def delivery_log():
        rows = fetch(
            mesh.database_urls["notification"],
            "SELECT channel, status, count(*) FROM deliveries WHERE recipient_id = ANY($1::uuid[])"
            " GROUP BY channel, status",
            ids,
        )
        return {(r[0], r[1]): r[2] for r in rows}

    # Messages handed to the mail server just before the kill were not yet marked sent: their
    # claim runs out and they go again with the same Message-ID, which the mailbox drops.
    wanted = {("EMAIL", "SENT"): 500, ("SMS", "SENT"): 250}
    until(lambda: delivery_log() == wanted, within=120, what="the delivery log to show all sent, once")
    assert everyone_confirmed()


def test_malformed_and_unknown_events_go_to_the_dlq_and_the_consumer_goes_on(mesh):
    edge = Edge(mesh)
    patient = edge.register_patient()
    known_recipient(edge, mesh, patient)
    edge.close()
    topic = "clinic.appointments.v1.events"
    undecodable = encoded(booked())
    undecodable = (undecodable[0], undecodable[1], b"\x08\xff\xff\xff not an AppointmentBooked")
    unknown = encoded(booked())
    unknown = (
        [
            (k, b"clinic.appointments.v1.AppointmentTeleported" if k == "ce_type" else v)
            for k, v in unknown[0]
        ],
        unknown[1],
        unknown[2],
    )
    no_envelope = ([], b"some-key", b"plain bytes, no CloudEvents headers")
    good = booked("CONSULT")
    good.patient_id = patient.user_id
    good.start_time.FromJsonString(at(future_day(95), "10:00"))
    produce_raw(mesh.kafka_bootstrap, topic, [undecodable, unknown, no_envelope, encoded(good)])

    wait_for_mail(mesh, patient.email, "is confirmed")

    def dead_lettered():
        wanted = {dict(undecodable[0])["ce_id"], dict(unknown[0])["ce_id"]}
        records = [
            r
            for r in read_topic(mesh.kafka_bootstrap, dlq_for(topic))
            if r.headers.get("dlq_consumer") == b"notification"
            and (r.headers.get("ce_id") in wanted or r.key == b"some-key")
        ]
        return records if len(records) >= 3 else None

    records = until(dead_lettered, within=30, what="the three poison events in the DLQ")
    errors = sorted(r.headers["dlq_error"].split(b":")[0] for r in records)
    assert errors == [b"DecodeError", b"MalformedEvent", b"MalformedEvent"]


def test_a_cancellation_seen_before_its_booking_tells_the_cancellation_only_and_schedules_nothing(mesh):
    from clinic.appointments.v1 import events_pb2

    edge = Edge(mesh)
    patient = edge.register_patient()
    known_recipient(edge, mesh, patient)
    booking = booked("CONSULT")
    booking.patient_id = patient.user_id
    booking.start_time.FromJsonString(at(future_day(96), "10:00"))
    fields = {f: getattr(booking, f) for f in ("appointment_id", "patient_id", "doctor_id", "visit_type")}
    cancelled = events_pb2.AppointmentCancelled(
        **fields, version=2, start_time=booking.start_time, end_time=booking.end_time
    )
    probe = booked("CONSULT")  # after them all: once it is confirmed, the others were handled
    probe.patient_id = patient.user_id
    probe.start_time.FromJsonString(at(future_day(97), "10:00"))
    produce_raw(mesh.kafka_bootstrap, "clinic.appointments.v1.events", [encoded(cancelled), encoded(booking)])
    produce_raw(mesh.kafka_bootstrap, "clinic.appointments.v1.events", [encoded(probe)])

    wait_for_mail(mesh, patient.email, "is cancelled")
    until(
        lambda: {r["event_type"] for r in deliveries(mesh, patient.user_id)} >= {"APPOINTMENT_BOOKED"},
        within=30,
        what="the probe's confirmation",
    )
    confirmed = [r for r in deliveries(mesh, patient.user_id) if r["event_type"] == "APPOINTMENT_BOOKED"]
    assert len(confirmed) == 1  # the probe's: the late booking of the cancelled appointment tells nothing
    reminders = fetch(
        mesh.database_urls["notification"],
        "SELECT status FROM reminders WHERE appointment_id = $1::uuid",
        booking.appointment_id,
    )
    assert [r["status"] for r in reminders] == ["CANCELLED"]
    edge.close()
