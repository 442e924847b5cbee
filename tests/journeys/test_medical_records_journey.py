"""Journey 2 through the edge (a doctor reviews a patient before the visit, writes notes, completes
the visit; the invoice becomes DUE, the patient gets one post-visit message) and the chart's FHIR
export, validated with fhir.resources."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fhir.resources.R4B.bundle import Bundle

from tests.support.billing import invoice_of, set_fee
from tests.support.clinic import ZONE
from tests.support.identity import Edge
from tests.support.notifications import mail, wait_for_mail
from tests.support.records import book, chart, new_doctor, new_patient


@pytest.fixture(scope="module")
def clinic(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    set_fee(edge, admin, "CONSULT", 60)
    yield edge, admin
    edge.close()


def next_slot(edge: Edge, person, doctor_id: str) -> tuple[str, str]:
    """The doctor's first free slot today (tomorrow late at night): (day, start)."""
    for offset in (0, 1):
        day = (datetime.now(ZONE) + timedelta(days=offset)).date().isoformat()
        reply = edge.http.get(
            "/v1/appointments/available",
            params={"doctor_id": doctor_id, "start_date": day, "end_date": day},
            headers=person.auth,
        )
        assert reply.status_code == 200, reply.text
        slots = reply.json().get("slots", [])
        if slots:
            return day, slots[0]["startTime"]
    raise AssertionError("no free slot today or tomorrow")


def test_journey_2_a_doctor_reviews_the_chart_writes_notes_and_completes_the_visit(clinic, mesh):
    edge, admin = clinic
    doctor = new_doctor(edge, admin, mesh)
    patient = new_patient(edge, mesh)
    pid = patient.user_id
    earlier = book(edge, mesh, patient, doctor)  # an earlier visit left history in the chart
    for path, body in [
        ("diagnoses", {"code": "I10"}),
        ("prescriptions", {"drug": "ramipril", "dose": "5 mg", "frequency": "once a day"}),
        ("notes", {"assessment": "blood pressure high", "plan": "start ramipril"}),
    ]:
        assert edge.http.post(f"/v1/records/{pid}/{path}", json=body, headers=doctor.auth).status_code == 200
    day, start = next_slot(edge, patient, doctor.user_id)
    visit = book(edge, mesh, patient, doctor, start)

    doctor = edge.login(doctor.email, doctor.password)  # journey 2 starts with the doctor's login
    date = "today" if day == datetime.now(ZONE).date().isoformat() else day
    listed = edge.http.get(
        "/v1/appointments", params={"doctor_id": doctor.user_id, "date": date}, headers=doctor.auth
    )
    assert listed.status_code == 200, listed.text
    assert visit in [a["id"] for a in listed.json()["appointments"]]
    assert earlier not in [a["id"] for a in listed.json()["appointments"]]

    reviewed = chart(edge, doctor, pid)
    assert reviewed.status_code == 200, reviewed.text
    body = reviewed.json()["chart"]
    assert [d["code"] for d in body["diagnoses"]] == ["I10"]
    assert body["diagnoses"][0]["codeTitle"] == "Essential (primary) hypertension"
    assert [p["drug"] for p in body["prescriptions"]] == ["ramipril"]
    assert body["notes"][0]["plan"] == "start ramipril"

    noted = edge.http.patch(
        f"/v1/records/{pid}",
        params={"update_mask": "running_notes"},
        json={"runningNotes": "BP controlled on ramipril; recheck in 3 months"},
        headers=doctor.auth,
    )
    assert noted.status_code == 200, noted.text
    assert noted.json()["chart"]["runningNotes"].startswith("BP controlled")
    versions = edge.http.get(f"/v1/records/{pid}/versions", headers=doctor.auth).json()["versions"]
    assert [v["version"] for v in versions] == [1]

    completed = edge.http.patch(
        f"/v1/appointments/{visit}",
        params={"update_mask": "status"},
        json={"status": "APPOINTMENT_STATUS_COMPLETED"},
        headers=doctor.auth,
    )
    assert completed.status_code == 200, completed.text
    assert invoice_of(edge, patient, visit, "DUE")["status"] == "INVOICE_STATUS_DUE"
    wait_for_mail(mesh, patient.email, "visit summary is ready")
    assert len(mail(mesh, patient.email, "visit summary is ready")) == 1


def test_the_chart_exports_as_a_valid_fhir_r4_bundle(clinic, mesh):
    edge, admin = clinic
    doctor = new_doctor(edge, admin, mesh)
    patient = new_patient(edge, mesh)
    pid = patient.user_id
    appointment_id = book(edge, mesh, patient, doctor)
    encounter = edge.http.post(
        f"/v1/records/{pid}/encounters",
        json={"appointmentId": appointment_id, "chiefComplaint": "wheezing"},
        headers=doctor.auth,
    ).json()["encounter"]["id"]
    for path, body in [
        ("diagnoses", {"code": "J45.909", "encounterId": encounter}),
        (
            "prescriptions",
            {
                "drug": "salbutamol",
                "strength": "100 mcg",
                "dose": "2 puffs",
                "route": "inhaled",
                "frequency": "as needed",
                "durationDays": 30,
            },
        ),
        ("vitals", {"heartRateBpm": 88, "oxygenSaturationPercent": 95, "temperatureCelsius": 37.2}),
    ]:
        assert edge.http.post(f"/v1/records/{pid}/{path}", json=body, headers=doctor.auth).status_code == 200
    edge.http.patch(
        f"/v1/records/{pid}",
        params={"update_mask": "allergies"},
        json={
            "allergies": [
                {"substance": "penicillin", "reaction": "rash", "severity": "ALLERGY_SEVERITY_MILD"}
            ]
        },
        headers=doctor.auth,
    ).raise_for_status()

    for reader in (doctor, patient):
        reply = edge.http.get(f"/v1/records/{pid}:export", headers=reader.auth)
        assert reply.status_code == 200, reply.text
        bundle = Bundle.model_validate(reply.json()["bundle"])
        kinds = sorted(entry.resource.get_resource_type() for entry in bundle.entry)
        assert (
            kinds
            == ["AllergyIntolerance", "Condition", "Encounter", "MedicationRequest"] + ["Observation"] * 3
        )
        condition = next(e.resource for e in bundle.entry if e.resource.get_resource_type() == "Condition")
        assert condition.code.coding[0].code == "J45.909"
        assert condition.subject.reference == f"Patient/{pid}"
