"""Notifications under faults: the SMTP server down while events arrive, the notification service
killed in the middle of 500 bookings, and poison events on a topic it reads. Then the dispatcher
run in the test, on a database of its own, through the real mailbox and SMS simulator: a channel
that fails unexpectedly, sends that hang, two replicas on one backlog, a claim that ran out, and
the retention of message texts."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy import text

from clinic_platform.events import dlq_for
from notification.channels import PermanentFailure
from tests.support.clinic import at, book_many, doctor_with_schedule, future_day
from tests.support.db import fetch
from tests.support.events import booked, encoded, produce_raw
from tests.support.identity import Edge
from tests.support.kafka import read_topic
from tests.support.notifications import (
    add_deliveries,
    deliveries,
    delivery_rows,
    email_channel,
    known_recipient,
    mail,
    messaging_faults,
    notification_database,
    notifier,
    outbox_events,
    texts,
    unique_phone,
    wait_for_mail,
)
from tests.support.polling import eventually, until

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


def test_malformed_events_go_to_the_dlq_unknown_types_are_skipped_and_the_consumer_goes_on(mesh):
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
        return records if len(records) >= 2 else None

    records = until(dead_lettered, within=30, what="the two malformed events in the DLQ")
    errors = sorted(r.headers["dlq_error"].split(b":")[0] for r in records)
    assert errors == [b"DecodeError", b"MalformedEvent"]
    # A type no one here knows yet (a newer producer's) is skipped, not dead-lettered.
    assert dict(unknown[0])["ce_id"] not in {r.headers.get("ce_id") for r in records}


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


# -- the dispatcher run in the test (one or two replicas) on a database of its own ------------------
class Unforeseen:
    """A channel with a bug for one address: it raises what no channel foresees, and sends the rest."""

    def __init__(self, channel, address: str) -> None:
        self.channel, self.address = channel, address

    async def send(self, delivery) -> None:
        if delivery.address == self.address:
            raise LookupError(f"no route to {delivery.address}")  # its text holds personal data
        await self.channel.send(delivery)


async def test_an_unexpected_error_fails_its_delivery_after_the_attempt_cap_and_the_batch_goes_on(
    stack, caplog
):
    caplog.set_level(logging.INFO)
    broken, fine = f"broken-{uuid.uuid4().hex[:8]}@example.org", f"fine-{uuid.uuid4().hex[:8]}@example.org"
    async with notification_database(stack) as url, notifier(stack, url, max_attempts=3) as sender:
        sender.channels["EMAIL"] = Unforeseen(sender.channels["EMAIL"], broken)
        bad, *good = await add_deliveries(sender.db, ("EMAIL", broken), ("EMAIL", fine), ("EMAIL", fine))

        assert await sender.send_due() == 3  # the round ends normally: the error stays with its delivery
        rows = await delivery_rows(sender.db)
        assert [(rows[i].status, rows[i].attempts) for i in good] == [("SENT", 1), ("SENT", 1)]
        reason = "an unexpected error (see the service log)"  # never the exception's class or text
        assert (rows[bad].status, rows[bad].failure_reason) == ("PENDING", reason)

        async def failed_for_good():
            await sender.send_due()
            return (await delivery_rows(sender.db))[bad].status == "FAILED"

        await eventually(failed_for_good, within=20, what="the delivery to fail after the attempt cap")
        assert (await delivery_rows(sender.db))[bad].attempts == 3
        assert sorted(await outbox_events(sender.db)) == sorted(
            [("NotificationFailed", str(bad))] + [("NotificationSent", str(i)) for i in good]
        )
    assert [m["received"] for m in mail(stack, fine)] == [1, 1]
    told = [r for r in caplog.records if r.getMessage() == "unexpected error sending a notification"]
    assert [(r.delivery, r.error) for r in told] == [(str(bad), "LookupError")] * 3
    assert not [r for r in caplog.records if broken in str(vars(r))]  # no address in any log line


async def test_every_send_is_cut_at_the_send_timeout_whatever_the_channel_and_retried(stack):
    connections = []
    silent = await asyncio.start_server(lambda _r, w: connections.append(w), "127.0.0.1", 0)
    phone = unique_phone()
    messaging_faults(stack, mode="slow", delay=5, times=1, match={"to": phone})
    try:
        async with (
            notification_database(stack) as url,
            notifier(stack, url, send_timeout_seconds=0.5) as sender,
        ):
            # Both clients would wait 30 s for each step; the notifier bounds the whole send.
            sender.channels["EMAIL"] = email_channel(silent.sockets[0].getsockname()[1], timeout=30)
            ids = await add_deliveries(sender.db, ("EMAIL", "someone@example.org"), ("SMS", phone))
            started = time.monotonic()
            assert await sender.send_due() == 2
            assert time.monotonic() - started < 3
            rows = await delivery_rows(sender.db)
            assert {(rows[i].status, rows[i].failure_reason) for i in ids} == {
                ("PENDING", "no answer within 0.5 s")
            }
    finally:
        messaging_faults(stack, mode="normal", times=0)
        silent.close()
        for writer in connections:
            writer.close()


async def test_two_replicas_working_one_backlog_send_each_delivery_exactly_once(stack):
    address, phone = f"replicas-{uuid.uuid4().hex[:8]}@example.org", unique_phone()
    # Text messages are slow (3 rounds of 0.5 s per batch), mail is fast: the second replica is
    # soon idle beside the first one's batch of texts, and would send again what it claimed if
    # that claim ran out before its batch was done.
    messaging_faults(stack, mode="slow", delay=0.5, times=1000, match={"to": phone})
    settings = {"batch_size": 6, "concurrency": 2, "send_timeout_seconds": 1.0, "lease_margin_seconds": 0.5}
    stopping = asyncio.Event()
    try:
        async with (
            notification_database(stack) as url,
            notifier(stack, url, **settings) as first,
            notifier(stack, url, **settings) as second,
        ):
            texts_ids = await add_deliveries(first.db, *[("SMS", phone)] * 6)
            replicas = [asyncio.create_task(first.run(stopping))]

            async def claimed():
                rows = await delivery_rows(first.db)
                return all(rows[i].attempts == 1 for i in texts_ids)

            await eventually(claimed, within=10, what="the first replica to claim the texts")
            mail_ids = await add_deliveries(second.db, *[("EMAIL", address)] * 12)
            replicas.append(asyncio.create_task(second.run(stopping)))

            async def all_sent():
                rows = await delivery_rows(first.db)
                return all(rows[i].status == "SENT" for i in texts_ids + mail_ids) and rows

            rows = await eventually(all_sent, within=60, what="every delivery to be sent")
            stopping.set()
            await asyncio.gather(*replicas)
            assert {rows[i].attempts for i in texts_ids + mail_ids} == {1}
            sent = await outbox_events(first.db)
            assert sorted(sent) == sorted(("NotificationSent", str(i)) for i in texts_ids + mail_ids)
    finally:
        stopping.set()
        messaging_faults(stack, mode="normal", times=0)
    # What reached the mailbox and the provider: each message once, and asked for once.
    assert sorted(m["received"] for m in mail(stack, address)) == [1] * 12
    assert sorted(m["requests"] for m in texts(stack, phone)) == [1] * 6


class Held:
    """A channel whose send hangs until the test lets it go, then fails for good."""

    def __init__(self) -> None:
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def send(self, delivery) -> None:
        self.entered.set()
        await self.release.wait()
        raise PermanentFailure("the provider refused it")


async def test_a_replica_whose_claim_ran_out_does_not_overwrite_what_the_newer_claim_recorded(stack):
    phone = unique_phone()
    async with (
        notification_database(stack) as url,
        notifier(stack, url) as stale,
        notifier(stack, url) as newer,
    ):
        held = stale.channels["SMS"] = Held()
        [delivery] = await add_deliveries(stale.db, ("SMS", phone))
        sending = asyncio.create_task(stale.send_due())
        await asyncio.wait_for(held.entered.wait(), 10)
        async with stale.db.transaction() as session:  # as if the stale replica had paused that long
            await session.execute(text("UPDATE deliveries SET next_attempt_time = now()"))
        assert await newer.send_due() == 1
        held.release.set()
        await sending

        row = (await delivery_rows(newer.db))[delivery]
        assert (row.status, row.attempts, row.failure_reason) == ("SENT", 2, "")
        assert await outbox_events(newer.db) == [("NotificationSent", str(delivery))]
    assert len(texts(stack, phone)) == 1


async def test_a_batch_stalled_past_its_lease_leaves_the_rest_to_the_replica_that_claims_it_next(stack):
    address = f"stalled-{uuid.uuid4().hex[:8]}@example.org"
    settings = {"batch_size": 2, "concurrency": 1, "send_timeout_seconds": 0.5, "lease_margin_seconds": 0.2}
    async with (
        notification_database(stack) as url,
        notifier(stack, url, **settings) as stalled,
        notifier(stack, url, **settings) as other,
    ):
        ids = await add_deliveries(stalled.db, ("EMAIL", address), ("EMAIL", address))
        # Recording the first result stalls (the outbox is locked, as a stuck database would hold
        # it), so the batch's second message waits for its turn while the lease runs out.
        lock = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        locked = lock.transaction()
        await locked.start()
        await lock.execute("LOCK TABLE outbox IN EXCLUSIVE MODE")
        try:
            sending = asyncio.create_task(stalled.send_due())

            async def lease_ran_out():
                async with stalled.db.engine.connect() as conn:
                    query = "SELECT bool_and(attempts = 1 AND next_attempt_time < now()) FROM deliveries"
                    return await conn.scalar(text(query))

            await eventually(lease_ran_out, within=10, what="the stalled batch's lease to run out")
            taking = asyncio.create_task(other.send_due())  # takes the waiting one (the other is locked)
            await eventually(
                lambda: len(mail(stack, address)) == 2, within=10, what="the other replica's send"
            )
        finally:
            await locked.rollback()
            await lock.close()
        await sending
        assert await taking == 1
        rows = await delivery_rows(other.db)
        assert sorted((rows[i].status, rows[i].attempts) for i in ids) == [("SENT", 1), ("SENT", 2)]
    # The stalled replica did not send the second message once its lease could not cover a send.
    assert sorted(m["received"] for m in mail(stack, address)) == [1, 1]


async def test_message_texts_older_than_the_retention_are_blanked_in_bounded_batches(stack):
    async with notification_database(stack) as url, notifier(stack, url) as pruner:
        old_sent, old_failed, old_pending, new_sent = await add_deliveries(
            pruner.db, *[("EMAIL", "someone@example.org")] * 4
        )
        ages = {old_sent: ("SENT", 40), old_failed: ("FAILED", 40), old_pending: ("PENDING", 40)}
        ages[new_sent] = ("SENT", 2)
        async with pruner.db.transaction() as session:
            for delivery, (status, days) in ages.items():
                await session.execute(
                    text(
                        "UPDATE deliveries SET status = :status, attempts = 1,"
                        " update_time = now() - make_interval(days => :days) WHERE id = :id"
                    ),
                    {"status": status, "days": days, "id": delivery},
                )
        before = await delivery_rows(pruner.db)
        cutoff = datetime.now(UTC) - timedelta(days=30)

        assert [await pruner.prune_bodies(cutoff, limit=1) for _ in range(3)] == [1, 1, 0]
        rows = await delivery_rows(pruner.db)
        for delivery in (old_sent, old_failed):
            assert (rows[delivery].subject, rows[delivery].body, rows[delivery].html) == ("", "", "")
            kept = ("status", "attempts", "address", "create_time", "update_time")
            assert [getattr(rows[delivery], c) for c in kept] == [getattr(before[delivery], c) for c in kept]
        for delivery in (old_pending, new_sent):  # not finished yet, or not old enough
            assert rows[delivery] == before[delivery]
