"""Medical records through the edge: the chart (encounters, SOAP notes with revisions, ICD-10
diagnoses, prescriptions, allergies, vitals), care relationships from appointments, access
requests, grants, break-the-glass, and the access log."""

from __future__ import annotations

import pytest

from tests.support.identity import Edge
from tests.support.records import book, chart, log_entries, new_doctor, new_patient, note


@pytest.fixture(scope="module")
def clinic(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctor = new_doctor(edge, admin, mesh)
    yield edge, admin, doctor
    edge.close()


def test_a_doctor_with_an_appointment_writes_and_reads_the_chart(clinic, mesh):
    edge, _, doctor = clinic
    patient = new_patient(edge, mesh)
    appointment_id = book(edge, mesh, patient, doctor)
    pid = patient.user_id

    reply = edge.http.post(
        f"/v1/records/{pid}/encounters",
        json={"appointmentId": appointment_id, "chiefComplaint": "persistent cough"},
        headers=doctor.auth,
    )
    assert reply.status_code == 200, reply.text
    encounter_id = reply.json()["encounter"]["id"]
    reply = note(edge, doctor, pid, encounterId=encounter_id, subjective="cough", plan="rest")
    assert reply.status_code == 200, reply.text
    written = reply.json()["note"]
    assert written["revision"] == 1
    reply = edge.http.patch(
        f"/v1/records/{pid}/notes/{written['id']}",
        params={"update_mask": "plan"},
        json={"plan": "rest and fluids"},
        headers=doctor.auth,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["note"]["revision"] == 2
    reply = edge.http.post(
        f"/v1/records/{pid}/diagnoses",
        json={"code": "J20.9", "encounterId": encounter_id},
        headers=doctor.auth,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["diagnosis"]["codeTitle"] == "Acute bronchitis, unspecified"
    reply = edge.http.post(
        f"/v1/records/{pid}/prescriptions",
        json={
            "drug": "amoxicillin",
            "strength": "500 mg",
            "dose": "1 capsule",
            "route": "oral",
            "frequency": "3 times a day",
            "durationDays": 7,
        },
        headers=doctor.auth,
    )
    assert reply.status_code == 200, reply.text
    reply = edge.http.post(
        f"/v1/records/{pid}/vitals",
        json={"systolicMmhg": 120, "diastolicMmhg": 80, "temperatureCelsius": 37.9},
        headers=doctor.auth,
    )
    assert reply.status_code == 200, reply.text
    reply = edge.http.patch(
        f"/v1/records/{pid}",
        params={"update_mask": "running_notes,allergies"},
        json={
            "runningNotes": "asthma as a child",
            "allergies": [
                {"substance": "penicillin", "reaction": "hives", "severity": "ALLERGY_SEVERITY_SEVERE"}
            ],
        },
        headers=doctor.auth,
    )
    assert reply.status_code == 200, reply.text

    for reader in (doctor, patient):
        reply = chart(edge, reader, pid)
        assert reply.status_code == 200, reply.text
        body = reply.json()["chart"]
        assert body["runningNotes"] == "asthma as a child"
        assert [a["substance"] for a in body["allergies"]] == ["penicillin"]
        assert body["notes"][0]["plan"] == "rest and fluids" and body["notes"][0]["revision"] == 2
        assert [d["code"] for d in body["diagnoses"]] == ["J20.9"]
        assert body["prescriptions"][0]["drug"] == "amoxicillin"
        assert body["vitalSigns"][0]["temperatureCelsius"] == 37.9
        assert body["encounters"][0]["appointmentId"] == appointment_id

    revisions = edge.http.get(
        f"/v1/records/{pid}/notes/{written['id']}/revisions", headers=patient.auth
    ).json()
    assert [(r["revision"], r["plan"]) for r in revisions["revisions"]] == [
        (2, "rest and fluids"),
        (1, "rest"),
    ]
    assert all(e["outcome"] == "ALLOWED" for e in map(dict, log_entries(mesh, pid)))
