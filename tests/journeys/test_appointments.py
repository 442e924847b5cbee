"""Appointments through the Envoy edge with real tokens: journeys 1 (book), 2 (the doctor's day,
appointment half) and 4 (cancel), the events they publish, ownership, and bad input."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from clinic.appointments.v1 import events_pb2
from tests.support.clinic import ZONE, at, doctor_with_schedule, future_day, known_patient
from tests.support.db import fetch
from tests.support.identity import Edge
from tests.support.kafka import read_topic
from tests.support.polling import until

TOPIC = "clinic.appointments.v1.events"


@pytest.fixture(scope="module")
def clinic(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctor = doctor_with_schedule(edge, admin)
    yield edge, admin, doctor
    edge.close()


def book(edge, person, doctor_id: str, start: str, visit: str = "CONSULT", **extra):
    body = {"doctorId": doctor_id, "startTime": start, "visitType": visit, **extra}
    return edge.http.post("/v1/appointments", json=body, headers=person.auth)


def events_of(stack, appointment_id: str, count: int):
    def mine():
        records = [r for r in read_topic(stack.kafka_bootstrap, TOPIC) if r.key == appointment_id.encode()]
        return records if len(records) >= count else None

    return until(mine, within=15, what=f"{count} events of appointment {appointment_id}")


def cloudevent(record, event_class, appointment_id: str):
    """The event of a record after checking its CloudEvents binary-mode headers and key."""
    headers = record.headers
    assert headers["ce_type"] == event_class.DESCRIPTOR.full_name.encode()
    assert headers["ce_source"] == b"/clinic/appointments"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/protobuf"
    assert uuid.UUID(headers["ce_id"].decode())
    assert datetime.fromisoformat(headers["ce_time"].decode().replace("Z", "+00:00"))
    assert record.key == appointment_id.encode()
    event = event_class.FromString(record.value)
    assert event.appointment_id == appointment_id
    return event


def test_journey_1_a_patient_finds_a_free_slot_and_books_it(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    day = future_day(3)
    slots = edge.http.get(
        "/v1/appointments/available",
        params={"doctor_id": doctor.user_id, "date": day.isoformat()},
        headers=patient.auth,
    )
    assert slots.status_code == 200
    body = slots.json()
    assert body["timeZone"] == "Europe/Berlin"
    assert len(body["slots"]) >= 40
    chosen = body["slots"][20]

    reply = book(edge, patient, doctor.user_id, chosen["startTime"], reasonForVisit="a cough that won't stop")
    assert reply.status_code == 200, reply.text
    appointment = reply.json()["appointment"]
    assert appointment["status"] == "APPOINTMENT_STATUS_CONFIRMED"
    assert appointment["patientId"] == patient.user_id
    assert (appointment["startTime"], appointment["endTime"]) == (chosen["startTime"], chosen["endTime"])

    again = edge.http.get(
        "/v1/appointments/available",
        params={"doctor_id": doctor.user_id, "date": day.isoformat()},
        headers=patient.auth,
    )
    assert chosen["startTime"] not in [s["startTime"] for s in again.json()["slots"]]
    mine = edge.http.get("/v1/appointments", headers=patient.auth).json()["appointments"]
    assert [a["id"] for a in mine] == [appointment["id"]]

    (record,) = events_of(mesh, appointment["id"], 1)
    event = cloudevent(record, events_pb2.AppointmentBooked, appointment["id"])
    assert (event.appointment_id, event.patient_id, event.doctor_id) == (
        appointment["id"],
        patient.user_id,
        doctor.user_id,
    )
    assert (event.visit_type, event.version) == ("CONSULT", 1)
    assert b"a cough" not in record.value  # the reason for the visit stays off the bus


def test_journey_2_the_doctor_sees_todays_appointments_and_completes_one(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    today = datetime.now(ZONE).date()
    free = (
        edge.http.get(
            "/v1/appointments/available",
            params={"doctor_id": doctor.user_id, "date": "today"},
            headers=patient.auth,
        )
        .json()
        .get("slots", [])
    )
    day_param = "today"
    if not free:  # the last half hour of the local day: no slot is left today
        day_param = (today + timedelta(days=1)).isoformat()
        free = edge.http.get(
            "/v1/appointments/available",
            params={"doctor_id": doctor.user_id, "date": day_param},
            headers=patient.auth,
        ).json()["slots"]
    appointment = book(edge, patient, doctor.user_id, free[-1]["startTime"]).json()["appointment"]

    day = edge.http.get(
        "/v1/appointments", params={"doctor_id": doctor.user_id, "date": day_param}, headers=doctor.auth
    )
    assert day.status_code == 200
    assert appointment["id"] in [a["id"] for a in day.json()["appointments"]]

    done = edge.http.patch(
        f"/v1/appointments/{appointment['id']}",
        params={"update_mask": "status"},
        json={"status": "APPOINTMENT_STATUS_COMPLETED"},
        headers=doctor.auth,
    )
    assert done.status_code == 200, done.text
    assert done.json()["appointment"]["status"] == "APPOINTMENT_STATUS_COMPLETED"
    again = edge.http.patch(
        f"/v1/appointments/{appointment['id']}",
        params={"update_mask": "status"},
        json={"status": "APPOINTMENT_STATUS_COMPLETED"},
        headers=doctor.auth,
    )
    assert again.status_code == 400
    assert "is COMPLETED" in again.json()["message"]

    _, completed = events_of(mesh, appointment["id"], 2)
    assert cloudevent(completed, events_pb2.AppointmentCompleted, appointment["id"]).version == 2


def test_journey_4_a_patient_cancels_and_the_slot_is_free_again(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    start = at(future_day(4), "10:00")
    appointment = book(edge, patient, doctor.user_id, start).json()["appointment"]

    cancelled = edge.http.delete(
        f"/v1/appointments/{appointment['id']}", params={"reason": "feeling better"}, headers=patient.auth
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["appointment"]["status"] == "APPOINTMENT_STATUS_CANCELLED"
    assert cancelled.json()["appointment"]["cancelReason"] == "feeling better"
    retried = edge.http.delete(f"/v1/appointments/{appointment['id']}", headers=patient.auth)
    assert retried.status_code == 200  # cancelling twice is safe and changes nothing

    other = edge.register_patient()
    assert book(edge, other, doctor.user_id, start).status_code == 200  # the slot is free again

    _, record = events_of(mesh, appointment["id"], 2)
    event = cloudevent(record, events_pb2.AppointmentCancelled, appointment["id"])
    assert (event.cancelled_by, event.reason, event.version) == (patient.user_id, "feeling better", 2)


def test_a_receptionist_books_for_a_known_patient_and_can_move_it(clinic, mesh):
    edge, admin, doctor = clinic
    receptionist = edge.create_staff(admin, "RECEPTIONIST")
    patient = known_patient(edge, mesh)
    day = future_day(5)
    made = book(edge, receptionist, doctor.user_id, at(day, "09:00"), patientId=patient.user_id)
    assert made.status_code == 200, made.text
    appointment = made.json()["appointment"]
    moved = edge.http.patch(
        f"/v1/appointments/{appointment['id']}",
        params={"update_mask": "start_time"},
        json={"startTime": at(day, "11:00")},
        headers=receptionist.auth,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["appointment"]["startTime"] == at(day, "11:00")
    # The old slot is free again, the new one taken.
    assert book(edge, edge.register_patient(), doctor.user_id, at(day, "09:00")).status_code == 200
    assert book(edge, edge.register_patient(), doctor.user_id, at(day, "11:00")).status_code == 409
    _, record = events_of(mesh, appointment["id"], 2)
    event = cloudevent(record, events_pb2.AppointmentRescheduled, appointment["id"])
    assert (event.previous_start_time.ToJsonString(), event.start_time.ToJsonString()) == (
        at(day, "09:00"),
        at(day, "11:00"),
    )


def test_another_patient_cannot_see_cancel_or_move_an_appointment_and_doctors_complete_only_their_own(clinic):
    edge, admin, doctor = clinic
    alice, bob = edge.register_patient(), edge.register_patient()
    other_doctor = edge.create_staff(admin, "DOCTOR", specialty="Testing")
    appointment = book(edge, alice, doctor.user_id, at(future_day(6), "10:00")).json()["appointment"]
    path = f"/v1/appointments/{appointment['id']}"

    assert edge.http.get(path, headers=bob.auth).status_code == 404
    assert edge.http.delete(path, headers=bob.auth).status_code == 404
    move = {"startTime": at(future_day(6), "11:00")}
    assert (
        edge.http.patch(path, params={"update_mask": "start_time"}, json=move, headers=bob.auth).status_code
        == 404
    )
    complete = {"status": "APPOINTMENT_STATUS_COMPLETED"}
    refused = edge.http.patch(
        path, params={"update_mask": "status"}, json=complete, headers=other_doctor.auth
    )
    assert refused.status_code == 404  # another doctor does not see it at all
    nurse = edge.create_staff(admin, "NURSE")
    refused = edge.http.patch(path, params={"update_mask": "status"}, json=complete, headers=nurse.auth)
    assert refused.status_code == 403
    assert "only the appointment's doctor" in refused.json()["message"]
    assert (
        edge.http.get(path, headers=alice.auth).json()["appointment"]["status"]
        == "APPOINTMENT_STATUS_CONFIRMED"
    )
    assert (
        edge.http.get("/v1/appointments", params={"patient_id": alice.user_id}, headers=bob.auth).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("change", "status", "field", "words"),
    [
        ({"doctorId": str(uuid.uuid4())}, 404, None, "doctor"),
        ({"doctorId": "not-an-id"}, 400, "appointment.doctor_id", "not a valid id"),
        ({"startTime": "OFF-TEMPLATE"}, 400, None, "start_time: "),
        ({"startTime": "2020-01-06T09:00:00Z"}, 400, None, "start_time: "),
        ({"startTime": "next tuesday"}, 400, None, "startTime"),
        ({"visitType": "SURGERY"}, 400, "appointment.visit_type", "not offered"),
        ({"visitType": ""}, 400, "appointment.visit_type", "is required"),
        (None, 400, "appointment.doctor_id", "is required"),
    ],
)
def test_bad_booking_input_is_refused_naming_the_field_and_nothing_is_stored(
    clinic, mesh, change, status, field, words
):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    body = {"doctorId": doctor.user_id, "startTime": at(future_day(7), "10:00"), "visitType": "CONSULT"}
    if change is None:
        body = {}  # an empty body
    else:
        body |= change
        if body["startTime"] == "OFF-TEMPLATE":
            body["startTime"] = at(future_day(7), "10:10")
    reply = edge.http.post("/v1/appointments", json=body, headers=patient.auth)
    assert reply.status_code == status, reply.text
    error = reply.json()
    assert words in error["message"]
    if field:
        assert error["details"][0]["fieldViolations"][0]["field"] == field
    stored = fetch(
        mesh.database_urls["appointments"],
        "SELECT count(*) FROM calendar_entries WHERE patient_id = $1::uuid",
        patient.user_id,
    )
    assert stored[0][0] == 0


def test_time_off_and_bookings_exclude_each_other(clinic):
    edge, _, doctor = clinic
    day = future_day(8)
    patient = edge.register_patient()
    booked = book(edge, patient, doctor.user_id, at(day, "10:00")).json()["appointment"]
    over_booking = {"startTime": at(day, "09:00"), "endTime": at(day, "12:00"), "reason": "conference"}
    refused = edge.http.post(f"/v1/doctors/{doctor.user_id}/timeOff", json=over_booking, headers=doctor.auth)
    assert refused.status_code == 400
    assert "1 confirmed appointment(s) in this period" in refused.json()["message"]

    away = {"startTime": at(day, "14:00"), "endTime": at(day, "16:00"), "reason": "conference"}
    made = edge.http.post(f"/v1/doctors/{doctor.user_id}/timeOff", json=away, headers=doctor.auth)
    assert made.status_code == 200, made.text
    during = book(edge, edge.register_patient(), doctor.user_id, at(day, "15:00"))
    assert during.status_code == 400
    assert "away" in during.json()["message"]
    slots = edge.http.get(
        "/v1/appointments/available",
        params={"doctor_id": doctor.user_id, "date": day.isoformat()},
        headers=patient.auth,
    ).json()["slots"]
    starts = {s["startTime"] for s in slots}
    assert at(day, "15:00") not in starts and at(day, "16:00") in starts and booked["startTime"] not in starts


def test_a_retried_booking_or_time_off_gives_the_first_answer_and_a_reused_key_is_refused(clinic, mesh):
    edge, _, doctor = clinic
    day = future_day(9)
    patient, other = edge.register_patient(), edge.register_patient()
    key = {"request_id": str(uuid.uuid4())}
    first = edge.http.post(
        "/v1/appointments",
        params=key,
        json={"doctorId": doctor.user_id, "startTime": at(day, "09:00"), "visitType": "CONSULT"},
        headers=patient.auth,
    )
    assert first.status_code == 200, first.text
    retry = edge.http.post(
        "/v1/appointments",
        params=key,
        json={"doctorId": doctor.user_id, "startTime": at(day, "09:00"), "visitType": "CONSULT"},
        headers=patient.auth,
    )
    assert retry.status_code == 200 and retry.json() == first.json()
    different = edge.http.post(
        "/v1/appointments",
        params=key,
        json={"doctorId": doctor.user_id, "startTime": at(day, "11:00"), "visitType": "CONSULT"},
        headers=patient.auth,
    )
    assert different.status_code == 400
    assert different.json()["message"] == "request_id: was already used for a different booking"
    # Keys belong to their caller: another patient's request with the same key is their own.
    theirs = edge.http.post(
        "/v1/appointments",
        params=key,
        json={"doctorId": doctor.user_id, "startTime": at(day, "11:00"), "visitType": "CONSULT"},
        headers=other.auth,
    )
    assert theirs.status_code == 200, theirs.text
    assert theirs.json()["appointment"]["id"] != first.json()["appointment"]["id"]
    rows = fetch(
        mesh.database_urls["appointments"],
        "SELECT count(*) AS n FROM calendar_entries WHERE patient_id = $1::uuid",
        patient.user_id,
    )
    assert rows[0]["n"] == 1

    away = {"startTime": at(day, "14:00"), "endTime": at(day, "15:00"), "reason": "training"}
    made = edge.http.post(f"/v1/doctors/{doctor.user_id}/timeOff", params=key, json=away, headers=doctor.auth)
    assert made.status_code == 200, made.text
    again = edge.http.post(
        f"/v1/doctors/{doctor.user_id}/timeOff", params=key, json=away, headers=doctor.auth
    )
    assert again.json() == made.json()
    moved = {**away, "endTime": at(day, "16:00")}
    reused = edge.http.post(
        f"/v1/doctors/{doctor.user_id}/timeOff", params=key, json=moved, headers=doctor.auth
    )
    assert reused.status_code == 400
    assert reused.json()["message"] == "request_id: was already used for a different time off"
    listed = edge.http.get(f"/v1/doctors/{doctor.user_id}/timeOff", headers=doctor.auth).json()["timeOff"]
    assert [t["id"] for t in listed if t["startTime"] == at(day, "14:00")] == [made.json()["timeOff"]["id"]]


def test_slots_by_specialty_over_a_date_range_and_across_a_clock_change(clinic, mesh):
    edge, admin, _ = clinic
    specialty = f"Dermatology-{uuid.uuid4().hex[:6]}"
    mornings = [
        {"dayOfWeek": day, "startTime": {"hours": 9}, "endTime": {"hours": 10}}
        for day in ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
    ]
    first = edge.create_staff(admin, "DOCTOR", specialty=specialty, displayName="Dr. First")
    second = edge.create_staff(admin, "DOCTOR", specialty=specialty, displayName="Dr. Second")
    for doctor in (first, second):
        until(
            lambda d=doctor: edge.http.get(f"/v1/doctors/{d.user_id}", headers=admin.auth).status_code == 200,
            within=20,
            what="the doctors in the directory",
        )
        edge.http.patch(
            f"/v1/doctors/{doctor.user_id}/schedule",
            params={"update_mask": "working_hours,slot_minutes,visit_types"},
            json={
                "slotMinutes": 30,
                "workingHours": mornings,
                "visitTypes": [{"code": "CONSULT", "name": "Consultation", "durationMinutes": 30}],
            },
            headers=admin.auth,
        ).raise_for_status()
    reply = edge.http.get(
        "/v1/appointments/available",
        params={"specialty": specialty.lower(), "start_date": "2027-03-27", "end_date": "2027-03-29"},
        headers=admin.auth,
    )
    assert reply.status_code == 200, reply.text
    slots = reply.json()["slots"]
    assert {s["doctorId"] for s in slots} == {first.user_id, second.user_id}
    starts = sorted({s["startTime"] for s in slots})
    # 09:00 and 09:30 local on each day; Berlin moves from UTC+1 to UTC+2 on 28 March 2027.
    assert starts == [
        "2027-03-27T08:00:00Z",
        "2027-03-27T08:30:00Z",
        "2027-03-28T07:00:00Z",
        "2027-03-28T07:30:00Z",
        "2027-03-29T07:00:00Z",
        "2027-03-29T07:30:00Z",
    ]
    assert [s["startTime"] for s in slots] == sorted(s["startTime"] for s in slots)
    too_long = edge.http.get(
        "/v1/appointments/available",
        params={"specialty": specialty, "start_date": "2027-03-01", "end_date": "2027-05-01"},
        headers=admin.auth,
    )
    assert too_long.status_code == 400 and "end_date" in too_long.json()["message"]


def test_staff_record_a_no_show_after_the_start_time(clinic, mesh):
    edge, admin, doctor = clinic
    patient = known_patient(edge, mesh)
    receptionist = edge.create_staff(admin, "RECEPTIONIST")
    # An appointment that began an hour ago (booked earlier; a booking in the past is refused).
    started = datetime.now(ZONE).replace(microsecond=0) - timedelta(hours=1)
    appointment_id = str(uuid.uuid4())
    fetch(
        mesh.database_urls["appointments"],
        "INSERT INTO calendar_entries (id, kind, doctor_id, patient_id, start_time, end_time, visit_type,"
        " status, version)"
        " VALUES ($1::uuid, 'APPOINTMENT', $2::uuid, $3::uuid, $4, $5, 'CONSULT', 'CONFIRMED', 1)",
        appointment_id,
        doctor.user_id,
        patient.user_id,
        started,
        started + timedelta(minutes=30),
    )
    path = f"/v1/appointments/{appointment_id}"
    cancel = edge.http.delete(path, headers=patient.auth)
    assert cancel.status_code == 400 and "already started" in cancel.json()["message"]
    marked = edge.http.patch(
        path,
        params={"update_mask": "status"},
        json={"status": "APPOINTMENT_STATUS_NO_SHOW"},
        headers=receptionist.auth,
    )
    assert marked.status_code == 200, marked.text
    assert marked.json()["appointment"]["status"] == "APPOINTMENT_STATUS_NO_SHOW"
    (record,) = events_of(mesh, appointment_id, 1)
    assert cloudevent(record, events_pb2.AppointmentNoShow, appointment_id).version == 2


def test_booking_works_while_user_management_is_down(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    user_management = mesh.service("user_management")
    user_management.stop()
    try:
        reply = book(edge, patient, doctor.user_id, at(future_day(9), "10:00"))
        assert reply.status_code == 200, reply.text
        slots = edge.http.get(
            "/v1/appointments/available",
            params={"doctor_id": doctor.user_id, "date": future_day(9).isoformat()},
            headers=patient.auth,
        )
        assert slots.status_code == 200
        assert edge.http.get("/v1/users/me", headers=patient.auth).status_code == 503  # that one needs it
    finally:
        user_management.start()


def test_a_doctors_list_filters_by_day_range_and_status_page_by_page_and_shows_only_their_own(clinic, mesh):
    edge, admin, _ = clinic
    doctor, other_doctor = (doctor_with_schedule(edge, admin) for _ in range(2))
    day, later = future_day(40), future_day(42)
    patients = [edge.register_patient() for _ in range(4)]
    times = [(day, "09:00"), (day, "10:00"), (day, "11:00"), (later, "09:00")]
    made = [
        book(edge, p, doctor.user_id, at(d, clock)).json()["appointment"]
        for p, (d, clock) in zip(patients, times, strict=True)
    ]
    assert edge.http.delete(f"/v1/appointments/{made[1]['id']}", headers=patients[1].auth).status_code == 200

    def listed(person, **params) -> list[dict]:
        found, token = [], ""
        while True:
            reply = edge.http.get(
                "/v1/appointments",
                params={**params, "page_size": 1, "page_token": token},
                headers=person.auth,
            )
            assert reply.status_code == 200, reply.text
            found += reply.json().get("appointments", [])
            token = reply.json().get("nextPageToken", "")
            if not token:
                return found

    ids = [a["id"] for a in made]
    assert [a["id"] for a in listed(doctor, date=day.isoformat())] == ids[:3]  # by start time
    confirmed = listed(doctor, date=day.isoformat(), status="CONFIRMED")
    assert [a["id"] for a in confirmed] == [ids[0], ids[2]]
    ranged = listed(doctor, start_date=day.isoformat(), end_date=later.isoformat(), status="CONFIRMED")
    assert [a["id"] for a in ranged] == [ids[0], ids[2], ids[3]]
    # Another doctor sees none of these, and may not ask for this doctor's schedule.
    assert listed(other_doctor, start_date=day.isoformat(), end_date=later.isoformat()) == []
    refused = edge.http.get(
        "/v1/appointments", params={"doctor_id": doctor.user_id}, headers=other_doctor.auth
    )
    assert refused.status_code == 403
    # A receptionist (front desk) sees the doctor's day; a nurse may cancel for a patient.
    desk = edge.create_staff(admin, "RECEPTIONIST")
    assert len(listed(desk, doctor_id=doctor.user_id, date=day.isoformat())) == 3
    nurse = edge.create_staff(admin, "NURSE")
    assert edge.http.delete(f"/v1/appointments/{ids[3]}", headers=nurse.auth).status_code == 200
