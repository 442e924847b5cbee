"""request_id on the chart's Create RPCs: a retry returns the first item and writes nothing new; a
key reused for a different request is 400 naming request_id and writes nothing."""

from __future__ import annotations

import uuid

import pytest

from tests.support.db import fetch
from tests.support.identity import Edge
from tests.support.records import book, new_doctor, new_patient, records_url

CREATES = [
    ("encounters", "encounter", {"chiefComplaint": "headache"}, {"chiefComplaint": "back pain"}),
    ("notes", "note", {"subjective": "tired"}, {"subjective": "dizzy"}),
    ("diagnoses", "diagnosis", {"code": "I10"}, {"code": "J20.9"}),
    (
        "prescriptions",
        "prescription",
        {"drug": "ibuprofen", "dose": "400 mg", "frequency": "as needed"},
        {"drug": "paracetamol", "dose": "1 g", "frequency": "as needed"},
    ),
    ("vitals", "vitalSigns", {"heartRateBpm": 72}, {"heartRateBpm": 90}),
]
TABLES = {
    "encounters": "encounters",
    "notes": "notes",
    "diagnoses": "diagnoses",
    "prescriptions": "prescriptions",
    "vitals": "vital_signs",
}


@pytest.fixture(scope="module")
def chart_of(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctor = new_doctor(edge, admin, mesh)
    patient = new_patient(edge, mesh)
    book(edge, mesh, patient, doctor)
    yield edge, doctor, patient.user_id
    edge.close()


def rows(mesh, table: str, patient_id: str) -> int:
    query = f"SELECT count(*) AS n FROM {table} WHERE patient_id = $1::uuid"  # noqa: S608 (TABLES)
    return fetch(records_url(mesh), query, patient_id)[0]["n"]


def events(mesh, patient_id: str) -> int:
    found = fetch(records_url(mesh), "SELECT count(*) AS n FROM outbox WHERE aggregate_id = $1", patient_id)
    return found[0]["n"]


@pytest.mark.parametrize(("path", "field", "body", "other"), CREATES, ids=[c[0] for c in CREATES])
def test_a_retried_create_returns_the_same_item_and_writes_nothing_new(
    chart_of, mesh, path, field, body, other
):
    edge, doctor, pid = chart_of
    key = str(uuid.uuid4())
    url = f"/v1/records/{pid}/{path}"
    first = edge.http.post(url, params={"requestId": key}, json=body, headers=doctor.auth)
    assert first.status_code == 200, first.text
    written, published = rows(mesh, TABLES[path], pid), events(mesh, pid)

    retry = edge.http.post(url, params={"requestId": key}, json=body, headers=doctor.auth)
    assert retry.status_code == 200, retry.text
    assert retry.json()[field] == first.json()[field]
    assert rows(mesh, TABLES[path], pid) == written
    assert events(mesh, pid) == published

    reused = edge.http.post(url, params={"requestId": key}, json=other, headers=doctor.auth)
    assert reused.status_code == 400, reused.text
    assert "request_id" in reused.json()["message"]
    assert rows(mesh, TABLES[path], pid) == written

    fresh = edge.http.post(url, params={"requestId": str(uuid.uuid4())}, json=body, headers=doctor.auth)
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()[field]["id"] != first.json()[field]["id"]
    assert rows(mesh, TABLES[path], pid) == written + 1
