"""Notifications through the Envoy edge: journeys 1, 2 and 4 reach the patient once per chosen
channel, in the clinic's time zone; opt-outs, templates, reminders and the delivery log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from clinic.notification.v1 import events_pb2
from clinic_platform.events import dlq_for
from tests.support.billing import set_fee
from tests.support.clinic import ZONE, at, doctor_with_schedule, future_day
from tests.support.db import fetch
from tests.support.identity import Edge
from tests.support.kafka import read_topic
from tests.support.notifications import (
    deliveries,
    known_recipient,
    mail,
    messaging_faults,
    texts,
    unique_phone,
    wait_for_mail,
)
from tests.support.polling import until


@pytest.fixture(scope="module")
def clinic(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    set_fee(edge, admin, "CONSULT", 60)
    doctor = doctor_with_schedule(edge, admin)
    yield edge, admin, doctor
    edge.close()


_days = iter(range(30, 400))


def book(edge, patient, doctor, start: str | None = None) -> dict:
    start = start or at(future_day(next(_days)), "10:00")
    body = {"doctorId": doctor.user_id, "startTime": start, "visitType": "CONSULT"}
    reply = edge.http.post("/v1/appointments", json=body, headers=patient.auth)
    assert reply.status_code == 200, reply.text
    return reply.json()["appointment"]


def move(edge, patient, appointment_id: str, new_start: str) -> str:
    reply = edge.http.patch(
        f"/v1/appointments/{appointment_id}",
        params={"update_mask": "start_time"},
        json={"startTime": new_start},
        headers=patient.auth,
    )
    assert reply.status_code == 200, reply.text
    return new_start


def clinic_time(start: str) -> str:
    """How a message writes an appointment time: the clinic's wall clock and zone."""
    local = datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(ZONE)
    return f"{local:%A, %d %B %Y at %H:%M} (Europe/Berlin)"


def test_journeys_1_2_4_the_patient_hears_once_by_each_channel_in_the_clinic_zone(clinic, mesh):
    edge, _, doctor = clinic
    phone = unique_phone()
    patient = edge.register_patient(phoneNumber=phone)
    day = future_day(next(_days))
    visit = book(edge, patient, doctor, at(day, "09:30"))
    cancelled = book(edge, patient, doctor, at(day, "15:00"))

    # journey 2: the doctor completes the visit; journey 4: the patient cancels the other one
    completed = edge.http.patch(
        f"/v1/appointments/{visit['id']}",
        params={"update_mask": "status"},
        json={"status": "APPOINTMENT_STATUS_COMPLETED"},
        headers=doctor.auth,
    )
    assert completed.status_code == 200, completed.text
    assert edge.http.delete(f"/v1/appointments/{cancelled['id']}", headers=patient.auth).status_code == 200

    confirmations = wait_for_mail(mesh, patient.email, "is confirmed", count=2)
    summary = wait_for_mail(mesh, patient.email, "visit summary is ready")
    cancellation = wait_for_mail(mesh, patient.email, "is cancelled")
    until(lambda: len(texts(mesh, phone)) >= 4, within=30, what="four text messages")

    assert len(confirmations) == 2 and len(summary) == 1 and len(cancellation) == 1
    assert sorted(m["subject"] for m in confirmations) == sorted(
        f"Your appointment on {clinic_time(a['startTime'])} is confirmed" for a in (visit, cancelled)
    )
    assert clinic_time(cancelled["startTime"]) in cancellation[0]["body"]
    assert "Clinic Mesh Demo Clinic" in summary[0]["body"]
    assert doctor_name(edge, doctor) in confirmations[0]["body"]
    # Never clinical content: the post-visit message only says where to read the summary.
    assert "sign in to read it" in summary[0]["body"]
    parts = ("is confirmed", "visit summary", "is cancelled")
    assert [len(texts(mesh, phone, part)) for part in parts] == [2, 1, 1]
    # The completed visit's invoice is due: the patient hears of that too, with the amount.
    due = wait_for_mail(mesh, patient.email, "invoice is due")
    assert "60.00 EUR" in due[0]["body"]
    # The delivery log agrees: one per event and channel, all sent.
    kinds = ["APPOINTMENT_BOOKED", "APPOINTMENT_BOOKED", "APPOINTMENT_COMPLETED", "APPOINTMENT_CANCELLED"]
    kinds.append("INVOICE_DUE")
    until(lambda: len(deliveries(mesh, patient.user_id)) == 10, within=20, what="ten deliveries")
    log = sorted((r["event_type"], r["channel"], r["status"]) for r in deliveries(mesh, patient.user_id))
    assert log == sorted((kind, channel, "SENT") for kind in kinds for channel in ("EMAIL", "SMS"))
    # The reminder of the cancelled appointment is cancelled with it; the completed one's too.
    reminders = edge.http.get("/v1/notifications/reminders", headers=patient.auth).json().get("reminders", [])
    assert [r["status"] for r in reminders] == ["REMINDER_STATUS_CANCELLED"] * 2  # one per appointment


def doctor_name(edge, doctor) -> str:
    return edge.http.get("/v1/users/me", headers=doctor.auth).json()["user"]["displayName"]


def test_a_patient_who_opted_out_of_sms_gets_email_only(clinic, mesh):
    edge, _, doctor = clinic
    phone = unique_phone()
    patient = edge.register_patient(phoneNumber=phone)
    reply = edge.http.patch(
        f"/v1/users/{patient.user_id}/notificationPreferences",
        params={"update_mask": "opted_out_channels"},
        json={"optedOutChannels": ["CHANNEL_SMS"]},
        headers=patient.auth,
    )
    assert reply.status_code == 200, reply.text
    known_recipient(edge, mesh, patient, mentioning="SMS")

    book(edge, patient, doctor)
    wait_for_mail(mesh, patient.email, "is confirmed")
    # Deliveries of one message are written together: the email's row existing means no SMS row.
    assert [r["channel"] for r in deliveries(mesh, patient.user_id)] == ["EMAIL"]
    assert texts(mesh, phone) == []


def test_the_delivery_log_shows_a_person_their_own_and_admins_everyone(clinic, mesh):
    edge, admin, doctor = clinic
    alice, bob = edge.register_patient(), edge.register_patient()
    book(edge, alice, doctor)
    book(edge, bob, doctor)
    wait_for_mail(mesh, alice.email, "is confirmed")
    wait_for_mail(mesh, bob.email, "is confirmed")

    own = edge.http.get("/v1/notifications", headers=alice.auth).json()["notifications"]
    assert [n["recipientId"] for n in own] == [alice.user_id]
    assert own[0]["channel"] == "CHANNEL_EMAIL" and own[0]["status"] == "DELIVERY_STATUS_SENT"
    assert own[0]["eventType"] == "EVENT_TYPE_APPOINTMENT_BOOKED" and own[0]["address"] == alice.email

    # someone else's: 404 for one, 403 for asking for their list
    assert edge.http.get(f"/v1/notifications/{own[0]['id']}", headers=bob.auth).status_code == 404
    other = edge.http.get("/v1/notifications", params={"recipient_id": alice.user_id}, headers=bob.auth)
    assert other.status_code == 403
    assert edge.http.get(f"/v1/notifications/{own[0]['id']}", headers=alice.auth).status_code == 200

    by_admin = edge.http.get(
        "/v1/notifications",
        params={"recipient_id": bob.user_id, "channel": "EMAIL", "status": "SENT", "page_size": 1},
        headers=admin.auth,
    )
    assert by_admin.status_code == 200
    assert [n["recipientId"] for n in by_admin.json()["notifications"]] == [bob.user_id]
    bad = edge.http.get("/v1/notifications", params={"channel": "PIGEON"}, headers=admin.auth)
    assert bad.status_code == 400 and "channel" in bad.json()["message"]


def test_an_admin_edits_a_template_and_the_next_message_uses_it_escaped_in_html(clinic, mesh):
    edge, admin, doctor = clinic
    listed = edge.http.get(
        "/v1/notifications/templates",
        params={"event_type": "APPOINTMENT_RESCHEDULED", "channel": "EMAIL"},
        headers=admin.auth,
    ).json()["templates"]
    assert len(listed) == 1
    template = listed[0]
    path = f"/v1/notifications/templates/{template['id']}"

    broken = edge.http.patch(
        path, params={"update_mask": "body"}, json={"body": "Hi {{ name"}, headers=admin.auth
    )
    assert broken.status_code == 400 and "template.body" in broken.json()["message"]
    patient = edge.register_patient(givenName="<b>Pat</b>")
    assert (
        edge.http.patch(
            path, params={"update_mask": "body"}, json={"body": "x"}, headers=patient.auth
        ).status_code
        == 403
    )

    body = "Hello {{ name }}: {{ previous_when }} is now {{ when }}. {{ clinic }}"
    updated = edge.http.patch(path, params={"update_mask": "body"}, json={"body": body}, headers=admin.auth)
    assert updated.status_code == 200, updated.text
    try:
        appointment = book(edge, patient, doctor)
        new_start = move(edge, patient, appointment["id"], at(future_day(next(_days)), "11:00"))
        message = wait_for_mail(mesh, patient.email, "was moved")[0]
        assert message["body"].startswith("Hello <b>Pat</b>")
        assert f"{clinic_time(appointment['startTime'])} is now {clinic_time(new_start)}" in message["body"]
        assert "&lt;b&gt;Pat&lt;/b&gt;" in message["html"] and "<b>Pat</b>" not in message["html"]
    finally:
        original = {"body": template["body"]}
        edge.http.patch(path, params={"update_mask": "body"}, json=original, headers=admin.auth)


def test_a_template_subject_with_a_line_break_is_refused_and_the_template_stays(clinic, mesh):
    edge, admin, _ = clinic
    [template] = edge.http.get(
        "/v1/notifications/templates",
        params={"event_type": "APPOINTMENT_CANCELLED", "channel": "EMAIL"},
        headers=admin.auth,
    ).json()["templates"]
    path = f"/v1/notifications/templates/{template['id']}"
    injected = {"subject": "Cancelled\r\nBcc: everyone@example.org"}  # a subject is a mail header

    refused = edge.http.patch(path, params={"update_mask": "subject"}, json=injected, headers=admin.auth)
    assert refused.status_code == 400, refused.text
    assert "template.subject" in refused.json()["message"]
    assert edge.http.get(path, headers=admin.auth).json()["template"]["subject"] == template["subject"]


def first_slot_within(edge, person, doctor, hours: float) -> str:
    """The earliest free slot starting 30 minutes to `hours` hours from now."""
    today = datetime.now(ZONE).date()
    reply = edge.http.get(
        "/v1/appointments/available",
        params={"doctor_id": doctor.user_id, "start_date": today.isoformat(),
                "end_date": (today + timedelta(days=2)).isoformat()},
        headers=person.auth,
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    now = datetime.now(UTC)
    for slot in reply.json()["slots"]:
        start = datetime.fromisoformat(slot["startTime"].replace("Z", "+00:00"))
        if now + timedelta(minutes=30) <= start <= now + timedelta(hours=hours):
            return slot["startTime"]
    raise AssertionError("no free slot in the next hours")


def reminders_of(edge, person, appointment_id: str) -> list[str]:
    reply = edge.http.get(
        "/v1/notifications/reminders", params={"appointment_id": appointment_id}, headers=person.auth
    )
    assert reply.status_code == 200, reply.text
    return [r["status"].removeprefix("REMINDER_STATUS_") for r in reply.json().get("reminders", [])]


def test_a_reminder_goes_out_once_inside_the_lead_time_and_never_for_a_cancelled_one(clinic, mesh):
    edge, admin, doctor = clinic
    soon_patient, later_patient, cancelling_patient = (edge.register_patient() for _ in range(3))

    # Inside the 24-hour lead time: reminded right away, once.
    soon = book(edge, soon_patient, doctor, first_slot_within(edge, soon_patient, doctor, hours=20))
    wait_for_mail(mesh, soon_patient.email, "Reminder:")
    until(lambda: reminders_of(edge, soon_patient, soon["id"]) == ["SENT"], within=20, what="reminder SENT")

    # Days ahead: scheduled; the cancelled one's reminder is cancelled with it.
    kept = book(edge, later_patient, doctor)
    dropped = book(edge, cancelling_patient, doctor)
    assert (
        edge.http.delete(f"/v1/appointments/{dropped['id']}", headers=cancelling_patient.auth).status_code
        == 200
    )
    until(lambda: reminders_of(edge, later_patient, kept["id"]) == ["SCHEDULED"], within=20, what="scheduled")
    until(
        lambda: reminders_of(edge, cancelling_patient, dropped["id"]) == ["CANCELLED"],
        within=20,
        what="the cancelled appointment's reminder to be cancelled",
    )
    # Let the clock reach both reminders' send time (the schedule is the service's own table).
    fetch(
        mesh.database_urls["notification"],
        "UPDATE reminders SET send_time = now() - interval '1 second' WHERE appointment_id = ANY($1::uuid[])",
        [kept["id"], dropped["id"]],
    )
    wait_for_mail(mesh, later_patient.email, "Reminder:")
    assert mail(mesh, cancelling_patient.email, "Reminder:") == []
    assert len(mail(mesh, soon_patient.email, "Reminder:")) == 1
    assert reminders_of(edge, receptionist(edge, admin), kept["id"]) == ["SENT"]


def receptionist(edge, admin):
    return edge.create_staff(admin, "RECEPTIONIST")


def test_a_moved_appointment_gets_a_new_reminder_at_its_new_time(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    appointment = book(edge, patient, doctor)
    new_start = move(edge, patient, appointment["id"], at(future_day(next(_days)), "12:00"))

    def rows():
        reply = edge.http.get(
            "/v1/notifications/reminders", params={"appointment_id": appointment["id"]}, headers=patient.auth
        )
        found = reply.json().get("reminders", [])
        return found if len(found) == 2 else None

    reminders = until(rows, within=20, what="two reminders")
    by_status = {r["status"]: r for r in reminders}
    assert set(by_status) == {"REMINDER_STATUS_CANCELLED", "REMINDER_STATUS_SCHEDULED"}
    scheduled = by_status["REMINDER_STATUS_SCHEDULED"]
    expected = datetime.fromisoformat(new_start.replace("Z", "+00:00")) - timedelta(hours=24)
    assert datetime.fromisoformat(scheduled["sendTime"].replace("Z", "+00:00")) == expected


def test_a_refused_text_message_is_failed_and_its_event_goes_to_the_dlq_while_email_is_sent(clinic, mesh):
    edge, _, doctor = clinic
    phone = unique_phone()
    patient = edge.register_patient(phoneNumber=phone)
    known_recipient(edge, mesh, patient)
    messaging_faults(mesh, mode="reject", times=1, match={"to": phone})
    appointment = book(edge, patient, doctor)

    wait_for_mail(mesh, patient.email, "is confirmed")
    failed = until(
        lambda: [r for r in deliveries(mesh, patient.user_id) if r["status"] == "FAILED"],
        within=30,
        what="the text message to fail",
    )
    assert [(r["channel"], r["attempts"]) for r in failed] == [("SMS", 1)]
    assert "422" in failed[0]["failure_reason"]

    def dead_lettered():
        topic = dlq_for("clinic.appointments.v1.events")
        return [
            r for r in read_topic(mesh.kafka_bootstrap, topic)
            if r.headers.get("dlq_consumer") == b"notification" and r.key == appointment["id"].encode()
        ]  # fmt: skip

    record = until(dead_lettered, within=20, what="the booking event in the DLQ")[0]
    assert b"SMS failed" in record.headers["dlq_error"]

    def failed_event():
        for r in read_topic(mesh.kafka_bootstrap, "clinic.notification.v1.events"):
            if r.headers.get("ce_type") == b"clinic.notification.v1.NotificationFailed":
                event = events_pb2.NotificationFailed.FromString(r.value)
                if event.recipient_id == patient.user_id:
                    return event
        return None

    assert until(failed_event, within=20, what="NotificationFailed").channel == 2  # CHANNEL_SMS


def test_a_text_message_the_provider_fails_twice_is_sent_once_on_the_third_attempt(clinic, mesh):
    edge, _, doctor = clinic
    phone = unique_phone()
    patient = edge.register_patient(phoneNumber=phone)
    known_recipient(edge, mesh, patient)
    messaging_faults(mesh, mode="error", times=2, match={"to": phone})
    book(edge, patient, doctor)

    sent = until(
        lambda: [
            r for r in deliveries(mesh, patient.user_id) if r["channel"] == "SMS" and r["status"] == "SENT"
        ],
        within=30,
        what="the text message to be sent",
    )
    assert sent[0]["attempts"] == 3
    assert len(texts(mesh, phone, "is confirmed")) == 1


def test_a_patient_who_chose_push_for_confirmations_gets_a_push_message_and_no_email(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    reply = edge.http.patch(
        f"/v1/users/{patient.user_id}/notificationPreferences",
        params={"update_mask": "messages"},
        json={"messages": [{"kind": "MESSAGE_KIND_APPOINTMENT_CONFIRMATION", "channels": ["CHANNEL_PUSH"]}]},
        headers=patient.auth,
    )
    assert reply.status_code == 200, reply.text
    known_recipient(edge, mesh, patient, mentioning="PUSH")  # the choice has reached the service

    book(edge, patient, doctor)
    pushed = until(
        lambda: [m for m in pushes(mesh, patient.user_id) if "is confirmed" in m["body"]],
        within=30,
        what="the push message",
    )
    assert pushed[0]["title"] == "Clinic Mesh Demo Clinic"  # no subject on push: the clinic titles it
    assert [r["channel"] for r in deliveries(mesh, patient.user_id)] == ["PUSH"]
    assert mail(mesh, patient.email) == []


def pushes(stack, user_id: str) -> list[dict]:
    reply = httpx.get(
        f"http://127.0.0.1:{stack.ports.messaging}/messages", params={"to": user_id}, timeout=10
    )
    return [m for m in reply.json()["messages"] if m["kind"] == "push"]
