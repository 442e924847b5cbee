"""An encounter names an appointment of this patient with the doctor writing it (the records
service's projection of appointment events): anything else is refused and nothing is written."""

from __future__ import annotations

import uuid

import pytest

from tests.support.db import fetch
from tests.support.identity import Edge
from tests.support.records import book, new_doctor, new_patient, records_url


@pytest.fixture(scope="module")
def people(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctor, colleague = new_doctor(edge, admin, mesh), new_doctor(edge, admin, mesh)
    patient, other = new_patient(edge, mesh), new_patient(edge, mesh)
    visits = {
        "mine": book(edge, mesh, patient, doctor),
        "colleague's": book(edge, mesh, patient, colleague),
        "other patient's": book(edge, mesh, other, doctor),
    }
    yield edge, doctor, patient.user_id, visits
    edge.close()


def encounters(mesh, patient_id: str) -> int:
    found = fetch(
        records_url(mesh), "SELECT count(*) AS n FROM encounters WHERE patient_id = $1::uuid", patient_id
    )
    return found[0]["n"]


def open_encounter(edge, doctor, patient_id: str, appointment_id: str):
    return edge.http.post(
        f"/v1/records/{patient_id}/encounters",
        json={"appointmentId": appointment_id, "chiefComplaint": "follow-up"},
        headers=doctor.auth,
    )


@pytest.mark.parametrize(
    ("appointment", "status", "says"),
    [
        ("unknown", 404, "no such appointment"),
        ("other patient's", 400, "another patient's appointment"),
        ("colleague's", 400, "appointment with another doctor"),
    ],
)
def test_an_encounter_naming_an_appointment_that_is_not_this_visit_is_refused(
    people, mesh, appointment, status, says
):
    edge, doctor, pid, visits = people
    before = encounters(mesh, pid)
    reply = open_encounter(edge, doctor, pid, visits.get(appointment, str(uuid.uuid4())))
    assert reply.status_code == status, reply.text
    assert says in reply.json()["message"] and "encounter.appointment_id" in reply.json()["message"]
    assert encounters(mesh, pid) == before


def test_an_encounter_of_the_doctors_own_appointment_with_the_patient_is_opened(people, mesh):
    edge, doctor, pid, visits = people
    reply = open_encounter(edge, doctor, pid, visits["mine"])
    assert reply.status_code == 200, reply.text
    assert reply.json()["encounter"]["appointmentId"] == visits["mine"]
