"""Telling people about access to a chart, through the edge and the local mailbox: a doctor's access
request reaches the patient once, break-the-glass reaches the patient and every admin once each,
and no message carries the reason a doctor gave (it may be clinical)."""

from __future__ import annotations

import uuid

import pytest

from tests.support.identity import Edge
from tests.support.notifications import deliveries, known_recipient, mail, wait_for_mail
from tests.support.records import new_doctor, new_patient, new_staff

REQUESTED = "asks to see your medical record"
EMERGENCY = "opened in an emergency"


@pytest.fixture(scope="module")
def clinic(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    yield edge, admin
    edge.close()


def ask(edge, doctor, patient_id: str, reason: str) -> None:
    reply = edge.http.post(
        f"/v1/records/{patient_id}/accessRequests", json={"reason": reason}, headers=doctor.auth
    )
    assert reply.status_code == 200, reply.text


def break_glass(edge, doctor, patient_id: str, justification: str) -> None:
    reply = edge.http.post(
        f"/v1/records/{patient_id}:breakGlass", json={"justification": justification}, headers=doctor.auth
    )
    assert reply.status_code == 200, reply.text


def test_an_access_request_and_a_break_the_glass_reach_the_patient_and_the_admins_once_each(clinic, mesh):
    edge, admin = clinic
    marker = f"suspected-{uuid.uuid4().hex[:10]}"
    patient = new_patient(edge, mesh)
    doctor, colleague = new_doctor(edge, admin, mesh), new_doctor(edge, admin, mesh)
    second_admin = new_staff(edge, admin, mesh, "ADMIN")
    # Admins are told of break-the-glass as notification knows them when the event arrives.
    for person in (patient, admin, second_admin):
        known_recipient(edge, mesh, person)
    admin_before = len(mail(mesh, admin.email, EMERGENCY))

    ask(edge, doctor, patient.user_id, f"referral: {marker} in the left lung")
    [request] = wait_for_mail(mesh, patient.email, REQUESTED)
    assert "Open the app to see the request" in request["body"]
    assert marker not in request["body"] + request["html"] + request["subject"]

    break_glass(edge, colleague, patient.user_id, f"unconscious on arrival, {marker} on the scan")
    [to_patient] = wait_for_mail(mesh, patient.email, EMERGENCY)
    [to_admin] = wait_for_mail(mesh, second_admin.email, EMERGENCY)
    wait_for_mail(mesh, admin.email, EMERGENCY, count=admin_before + 1)
    assert "opened your medical record" in to_patient["body"]
    assert "opened a patient's medical record" in to_admin["body"]
    for message in (to_patient, to_admin):
        assert marker not in message["body"] + message["html"] + message["subject"]

    # A later event of the same chart (same partition, so handled after the others) reaches the
    # patient: by then a second copy of any earlier message would have been written too.
    ask(edge, new_doctor(edge, admin, mesh), patient.user_id, "second opinion")
    wait_for_mail(mesh, patient.email, REQUESTED, count=2)
    assert len(mail(mesh, patient.email, EMERGENCY)) == 1
    assert len(mail(mesh, second_admin.email, EMERGENCY)) == 1
    assert len(mail(mesh, admin.email, EMERGENCY)) == admin_before + 1
    # One delivery per person and channel (the patient has no phone: email only).
    assert [d["channel"] for d in deliveries(mesh, patient.user_id, "EMERGENCY_ACCESS_USED")] == ["EMAIL"]
    assert len(deliveries(mesh, patient.user_id, "RECORD_ACCESS_REQUESTED")) == 2
    assert [d["channel"] for d in deliveries(mesh, second_admin.user_id, "EMERGENCY_ACCESS_USED")] == [
        "EMAIL"
    ]
    # The doctors themselves are told nothing.
    assert deliveries(mesh, colleague.user_id) == []
