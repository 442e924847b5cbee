"""request_id on the chart's Create RPCs and on CreateAccessRequest / CreateAccessGrant: a retry
returns the first item and writes nothing new (no row, no event, no second message to the patient);
a key reused for a different request is 400 naming request_id and writes nothing."""

from __future__ import annotations

import uuid

import pytest

from tests.support.db import fetch
from tests.support.identity import Edge
from tests.support.notifications import deliveries, known_recipient, wait_for_mail
from tests.support.records import book, new_doctor, new_patient, records_url

REQUESTED = "asks to see your medical record"

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


@pytest.fixture(scope="module")
def clinic(mesh):
    edge = Edge(mesh)
    yield edge, edge.admin()
    edge.close()


def test_a_retried_access_request_returns_the_same_request_and_tells_the_patient_once(clinic, mesh):
    edge, admin = clinic
    patient, doctor = new_patient(edge, mesh), new_doctor(edge, admin, mesh)
    known_recipient(edge, mesh, patient)
    pid, key = patient.user_id, str(uuid.uuid4())
    url = f"/v1/records/{pid}/accessRequests"
    body = {"reason": "referral from the emergency department"}

    first = edge.http.post(url, params={"requestId": key}, json=body, headers=doctor.auth)
    assert first.status_code == 200, first.text
    written, published = rows(mesh, "access_requests", pid), events(mesh, pid)
    assert written == 1

    retry = edge.http.post(url, params={"requestId": key}, json=body, headers=doctor.auth)
    assert retry.status_code == 200, retry.text
    assert retry.json()["accessRequest"] == first.json()["accessRequest"]
    assert rows(mesh, "access_requests", pid) == written
    assert events(mesh, pid) == published

    reused = edge.http.post(
        url, params={"requestId": key}, json={"reason": "another reason"}, headers=doctor.auth
    )
    assert reused.status_code == 400, reused.text
    assert "request_id" in reused.json()["message"]
    assert rows(mesh, "access_requests", pid) == written

    # Without the key, the same ask is a second request while the first is pending: refused.
    again = edge.http.post(url, params={"requestId": str(uuid.uuid4())}, json=body, headers=doctor.auth)
    assert again.status_code == 409, again.text

    # Another doctor's request on the same chart (same partition, handled after the first) reaches
    # the patient: by then a message for a retry would have been written too.
    other = edge.http.post(url, json=body, headers=new_doctor(edge, admin, mesh).auth)
    assert other.status_code == 200, other.text
    wait_for_mail(mesh, patient.email, REQUESTED, count=2)
    assert len(deliveries(mesh, pid, "RECORD_ACCESS_REQUESTED")) == 2


def test_a_retried_grant_returns_the_same_grant_and_writes_nothing_new(clinic, mesh):
    edge, admin = clinic
    patient, doctor = new_patient(edge, mesh), new_doctor(edge, admin, mesh)
    pid, key = patient.user_id, str(uuid.uuid4())
    asked = edge.http.post(
        f"/v1/records/{pid}/accessRequests", json={"reason": "second opinion"}, headers=doctor.auth
    )
    assert asked.status_code == 200, asked.text
    request_id = asked.json()["accessRequest"]["id"]
    url = f"/v1/records/{pid}/accessGrants"
    body = {"granteeId": doctor.user_id, "accessRequestId": request_id}

    first = edge.http.post(url, params={"requestId": key}, json=body, headers=patient.auth)
    assert first.status_code == 200, first.text
    written, published = rows(mesh, "access_grants", pid), events(mesh, pid)
    assert written == 1

    retry = edge.http.post(url, params={"requestId": key}, json=body, headers=patient.auth)
    assert retry.status_code == 200, retry.text
    assert retry.json()["accessGrant"]["id"] == first.json()["accessGrant"]["id"]
    assert retry.json()["accessGrant"]["accessRequestId"] == request_id
    assert rows(mesh, "access_grants", pid) == written
    assert events(mesh, pid) == published

    other = {"granteeId": new_doctor(edge, admin, mesh).user_id}
    reused = edge.http.post(url, params={"requestId": key}, json=other, headers=patient.auth)
    assert reused.status_code == 400, reused.text
    assert "request_id" in reused.json()["message"]
    assert rows(mesh, "access_grants", pid) == written
    assert events(mesh, pid) == published

    # The grant works: the doctor reads the chart.
    assert edge.http.get(f"/v1/records/{pid}", headers=doctor.auth).status_code == 200
