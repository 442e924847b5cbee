"""Who may see what in a chart, through the edge: every role against every chart route, access
requests, grants and their revocation, break-the-glass, and the access log that records it all."""

from __future__ import annotations

import pytest

from tests.support.identity import Edge
from tests.support.records import book, chart, log_entries, new_doctor, new_patient, new_staff, note

NOTE = {"subjective": "headache", "plan": "paracetamol"}


def routes(pid: str, note_id: str) -> dict[str, tuple[str, str, dict | None, dict | None]]:
    """RPC -> (HTTP method, path, query, body)."""
    return {
        "GetChart": ("GET", f"/v1/records/{pid}", None, None),
        "UpdateChart": (
            "PATCH",
            f"/v1/records/{pid}",
            {"update_mask": "running_notes"},
            {"runningNotes": "x"},
        ),
        "ListChartVersions": ("GET", f"/v1/records/{pid}/versions", None, None),
        "ExportChart": ("GET", f"/v1/records/{pid}:export", None, None),
        "CreateEncounter": ("POST", f"/v1/records/{pid}/encounters", None, {"chiefComplaint": "x"}),
        "ListEncounters": ("GET", f"/v1/records/{pid}/encounters", None, None),
        "CreateNote": ("POST", f"/v1/records/{pid}/notes", None, NOTE),
        "ListNoteRevisions": ("GET", f"/v1/records/{pid}/notes/{note_id}/revisions", None, None),
        "CreateDiagnosis": ("POST", f"/v1/records/{pid}/diagnoses", None, {"code": "R51.9"}),
        "CreatePrescription": (
            "POST",
            f"/v1/records/{pid}/prescriptions",
            None,
            {"drug": "ibuprofen", "dose": "400 mg", "frequency": "as needed"},
        ),
        "CreateVitalSigns": ("POST", f"/v1/records/{pid}/vitals", None, {"heartRateBpm": 70}),
    }


ALL = set(routes("p", "n"))
READS = {"GetChart", "ListChartVersions", "ExportChart", "ListEncounters", "ListNoteRevisions"}
# Who may call what (everything else is 403, or 404 for another patient's chart).
ALLOWED = {
    "patient": READS,
    "other_patient": set(),
    "doctor_with_appointment": ALL,
    "doctor_without": set(),
    "nurse_with_grant": {"GetChart", "CreateVitalSigns"},
    "nurse_without": set(),
    "receptionist": set(),
    "admin": set(),
    "analyst": set(),
}


@pytest.fixture(scope="module")
def people(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctor = new_doctor(edge, admin, mesh)
    patient = new_patient(edge, mesh)
    book(edge, mesh, patient, doctor)
    cast = {
        "patient": patient,
        "other_patient": new_patient(edge, mesh),
        "doctor_with_appointment": doctor,
        "doctor_without": new_doctor(edge, admin, mesh),
        "nurse_with_grant": new_staff(edge, admin, mesh, "NURSE"),
        "nurse_without": new_staff(edge, admin, mesh, "NURSE"),
        "receptionist": new_staff(edge, admin, mesh, "RECEPTIONIST"),
        "admin": admin,
        "analyst": new_staff(edge, admin, mesh, "ANALYST"),
    }
    granted = edge.http.post(
        f"/v1/records/{patient.user_id}/accessGrants",
        json={"granteeId": cast["nurse_with_grant"].user_id},
        headers=patient.auth,
    )
    assert granted.status_code == 200, granted.text
    written = note(edge, doctor, patient.user_id, **NOTE)
    assert written.status_code == 200, written.text
    yield edge, cast, written.json()["note"]["id"]
    edge.close()


@pytest.mark.parametrize("who", sorted(ALLOWED))
def test_every_role_gets_exactly_its_cells_and_every_refusal_is_audited(people, mesh, who):
    edge, cast, note_id = people
    person, pid = cast[who], cast["patient"].user_id
    outcomes = {}
    for rpc, (method, path, query, body) in routes(pid, note_id).items():
        reply = edge.http.request(method, path, params=query, json=body, headers=person.auth)
        outcomes[rpc] = reply.status_code
    expected_refusal = 404 if who == "other_patient" else 403
    assert outcomes == {rpc: 200 if rpc in ALLOWED[who] else expected_refusal for rpc in outcomes}

    entries = [e for e in log_entries(mesh, pid) if e["actor_id"] == person.user_id]
    denied = {e["method"] for e in entries if e["outcome"] == "DENIED"}
    allowed = {e["method"] for e in entries if e["outcome"] == "ALLOWED"}
    assert denied == ALL - ALLOWED[who]
    assert ALLOWED[who] <= allowed


def test_a_doctor_without_a_relationship_gets_nothing_until_the_patient_approves_and_revoking_closes_it(
    people, mesh
):
    edge, cast, _ = people
    patient = new_patient(edge, mesh)
    doctor, pid = cast["doctor_without"], patient.user_id
    refused = chart(edge, doctor, pid)
    assert refused.status_code == 403
    assert "request access" in refused.json()["message"]

    asked = edge.http.post(
        f"/v1/records/{pid}/accessRequests", json={"reason": "referral from Dr. Silva"}, headers=doctor.auth
    )
    assert asked.status_code == 200, asked.text
    request_id = asked.json()["accessRequest"]["id"]
    again = edge.http.post(f"/v1/records/{pid}/accessRequests", json={"reason": "again"}, headers=doctor.auth)
    assert again.status_code == 409
    assert chart(edge, doctor, pid).status_code == 403  # asking is not having

    pending = edge.http.get(f"/v1/records/{pid}/accessRequests?status=PENDING", headers=patient.auth).json()
    assert [r["id"] for r in pending["accessRequests"]] == [request_id]
    granted = edge.http.post(
        f"/v1/records/{pid}/accessGrants",
        json={"granteeId": doctor.user_id, "accessRequestId": request_id},
        headers=patient.auth,
    )
    assert granted.status_code == 200, granted.text
    grant = granted.json()["accessGrant"]
    assert grant["active"] is True
    assert chart(edge, doctor, pid).status_code == 200
    assert note(edge, doctor, pid).status_code == 200

    revoked = edge.http.delete(f"/v1/records/{pid}/accessGrants/{grant['id']}", headers=patient.auth)
    assert revoked.status_code == 200, revoked.text
    assert "active" not in revoked.json()["accessGrant"] and revoked.json()["accessGrant"]["revokeTime"]
    assert chart(edge, doctor, pid).status_code == 403
    assert note(edge, doctor, pid).status_code == 403

    methods = [(e["method"], e["outcome"], e["basis"]) for e in log_entries(mesh, pid)]
    assert methods[:2] == [
        ("GetChart", "DENIED", "UNSPECIFIED"),
        ("CreateAccessRequest", "ALLOWED", "UNSPECIFIED"),
    ]
    assert ("GetChart", "ALLOWED", "GRANT") in methods
    assert methods[-2:] == [("GetChart", "DENIED", "UNSPECIFIED"), ("CreateNote", "DENIED", "UNSPECIFIED")]


def test_a_denied_request_gives_no_access(people, mesh):
    edge, cast, _ = people
    patient = new_patient(edge, mesh)
    doctor, pid = cast["doctor_without"], patient.user_id
    asked = edge.http.post(
        f"/v1/records/{pid}/accessRequests", json={"reason": "second opinion"}, headers=doctor.auth
    )
    request_id = asked.json()["accessRequest"]["id"]
    denied = edge.http.post(
        f"/v1/records/{pid}/accessRequests/{request_id}:deny", json={}, headers=patient.auth
    )
    assert (
        denied.status_code == 200
        and denied.json()["accessRequest"]["status"] == "ACCESS_REQUEST_STATUS_DENIED"
    )
    assert chart(edge, doctor, pid).status_code == 403
    # Only the patient decides.
    other = edge.http.post(
        f"/v1/records/{pid}/accessRequests/{request_id}:deny", json={}, headers=doctor.auth
    )
    assert other.status_code == 403


def test_break_the_glass_opens_the_chart_at_once_for_a_while_and_stands_out_in_the_log(people, mesh):
    edge, cast, _ = people
    patient = new_patient(edge, mesh)
    doctor, pid = cast["doctor_without"], patient.user_id
    short = edge.http.post(
        f"/v1/records/{pid}:breakGlass", json={"justification": "urgent"}, headers=doctor.auth
    )
    assert short.status_code == 400 and "justification" in short.text
    nurse = edge.http.post(
        f"/v1/records/{pid}:breakGlass",
        json={"justification": "unconscious patient brought in by ambulance"},
        headers=cast["nurse_without"].auth,
    )
    assert nurse.status_code == 403

    reply = edge.http.post(
        f"/v1/records/{pid}:breakGlass",
        json={"justification": "unconscious patient brought in by ambulance"},
        headers=doctor.auth,
    )
    assert reply.status_code == 200, reply.text
    grant = reply.json()["accessGrant"]
    assert grant["kind"] == "ACCESS_GRANT_KIND_EMERGENCY" and grant["active"] and grant["expireTime"]
    assert chart(edge, doctor, pid).status_code == 200

    log = edge.http.get(f"/v1/records/{pid}/accessLog", headers=patient.auth).json()["accessLogEntries"]
    newest_first = [(e["method"], e.get("emergency", False), e.get("basis")) for e in log]
    assert newest_first[:2] == [
        ("GetChart", True, "ACCESS_BASIS_EMERGENCY"),
        ("BreakGlass", True, "ACCESS_BASIS_EMERGENCY"),
    ]
    assert log[1]["reason"] == "unconscious patient brought in by ambulance"
    # Admins see the metadata of every chart, never the text a clinician wrote; others none.
    everything = edge.http.get("/v1/records/-/accessLog", headers=cast["admin"].auth)
    assert everything.status_code == 200 and everything.json()["accessLogEntries"]
    as_admin = edge.http.get(f"/v1/records/{pid}/accessLog", headers=cast["admin"].auth).json()
    glass = [e for e in as_admin["accessLogEntries"] if e["method"] == "BreakGlass" and e.get("emergency")]
    assert [(e["actorId"], e.get("reason", "")) for e in glass] == [(doctor.user_id, "")]
    grants = edge.http.get(f"/v1/records/{pid}/accessGrants", headers=cast["admin"].auth).json()[
        "accessGrants"
    ]
    assert [g.get("justification", "") for g in grants] == [""]
    assert "ambulance" not in everything.text
    assert edge.http.get(f"/v1/records/{pid}/accessLog", headers=cast["receptionist"].auth).status_code == 403
    assert (
        edge.http.get(f"/v1/records/{pid}/accessLog", headers=cast["other_patient"].auth).status_code == 404
    )


def test_refusals_after_the_gate_and_on_the_access_routes_are_logged_as_denials(people, mesh):
    edge, cast, _ = people
    patient = new_patient(edge, mesh)
    author, colleague = cast["doctor_with_appointment"], new_doctor(edge, edge.admin(), mesh)
    book(edge, mesh, patient, author)
    book(edge, mesh, patient, colleague)
    pid = patient.user_id
    written = note(edge, author, pid, **NOTE)
    assert written.status_code == 200, written.text
    note_id = written.json()["note"]["id"]

    amended = edge.http.patch(
        f"/v1/records/{pid}/notes/{note_id}",
        params={"update_mask": "plan"},
        json={"plan": "something else"},
        headers=colleague.auth,
    )
    assert amended.status_code == 403, amended.text
    listed = edge.http.get(f"/v1/records/{pid}/accessRequests", headers=cast["receptionist"].auth)
    assert listed.status_code == 403
    grants = edge.http.get(f"/v1/records/{pid}/accessGrants", headers=cast["other_patient"].auth)
    assert grants.status_code == 404
    log = edge.http.get(f"/v1/records/{pid}/accessLog", headers=cast["analyst"].auth)
    assert log.status_code == 403

    denials = {(e["actor_id"], e["method"]) for e in log_entries(mesh, pid) if e["outcome"] == "DENIED"}
    assert denials == {
        (colleague.user_id, "UpdateNote"),
        (cast["receptionist"].user_id, "ListAccessRequests"),
        (cast["other_patient"].user_id, "ListAccessGrants"),
        (cast["analyst"].user_id, "ListAccessLogEntries"),
    }
    # The refused amendment changed nothing.
    revisions = edge.http.get(f"/v1/records/{pid}/notes/{note_id}/revisions", headers=author.auth).json()
    assert [r["plan"] for r in revisions["revisions"]] == [NOTE["plan"]]
