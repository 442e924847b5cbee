"""Medical records through the edge: people the records service knows, care relationships made
by booking, and chart entries."""

from __future__ import annotations

import itertools

from tests.support.clinic import at, doctor_with_schedule, future_day
from tests.support.db import fetch
from tests.support.identity import Edge, Person
from tests.support.polling import until

_days = itertools.count(30)


def records_url(stack) -> str:
    return stack.database_urls["medical_records"]


def known_to_records(stack, *people: Person) -> None:
    """Wait until the records service's projection of users has them."""
    for person in people:
        until(
            lambda p=person: fetch(records_url(stack), "SELECT 1 FROM users WHERE id = $1::uuid", p.user_id),
            within=20,
            what="the user to reach the medical records service",
        )


def new_patient(edge: Edge, stack) -> Person:
    patient = edge.register_patient()
    known_to_records(stack, patient)
    return patient


def new_doctor(edge: Edge, admin: Person, stack) -> Person:
    doctor = doctor_with_schedule(edge, admin)
    known_to_records(stack, doctor)
    return doctor


def new_staff(edge: Edge, admin: Person, stack, role: str) -> Person:
    person = edge.create_staff(admin, role)
    known_to_records(stack, person)
    return person


def book(edge: Edge, stack, patient: Person, doctor: Person, start: str | None = None) -> str:
    """An appointment of the patient with the doctor, once the records service has seen it."""
    body = {
        "doctorId": doctor.user_id,
        "startTime": start or at(future_day(next(_days)), "10:00"),
        "visitType": "CONSULT",
    }
    reply = edge.http.post("/v1/appointments", json=body, headers=patient.auth)
    assert reply.status_code == 200, reply.text
    appointment_id = reply.json()["appointment"]["id"]
    until(
        lambda: fetch(
            records_url(stack), "SELECT 1 FROM care_appointments WHERE id = $1::uuid", appointment_id
        ),
        within=20,
        what="the appointment to reach the medical records service",
    )
    return appointment_id


def chart(edge: Edge, person: Person, patient_id: str, **params):
    return edge.http.get(f"/v1/records/{patient_id}", params=params, headers=person.auth)


def note(edge: Edge, person: Person, patient_id: str, **sections):
    body = sections or {"subjective": "cough for three days", "assessment": "viral bronchitis"}
    return edge.http.post(f"/v1/records/{patient_id}/notes", json=body, headers=person.auth)


def log_entries(stack, patient_id: str) -> list:
    return fetch(
        records_url(stack),
        "SELECT actor_id::text, actor_role, action, method, outcome, basis, emergency FROM access_log"
        " WHERE patient_id = $1::uuid ORDER BY sequence",
        patient_id,
    )


def restart_records(edge: Edge, stack, **env: str) -> None:
    """Restart the records service the way a deployment does (SIGTERM: drain, leave the consumer
    group, exit; then start) with `env` added to its environment, and return once it serves AND
    its event consumer is back in its group (a patient registered now reaches it).

    Waiting for the consumer is not politeness: a consumer stopped while its join of the group is
    still in flight (a service stopped within ~3 s of starting) leaves a member behind that the
    local broker (Tansu 0.6) never expires, and the group then gets no partitions for minutes:
    every later test that waits for an event in the records service times out."""
    stack.service("medical_records").stop()
    stack.service_env_extra = {**stack.service_env_extra, **env}
    records = stack.service("medical_records")
    records.launch()
    records.wait_ready()
    known_to_records(stack, edge.register_patient())
