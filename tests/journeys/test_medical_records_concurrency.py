"""A chart under concurrent use: simultaneous chart updates each become their own version and the
chart stays readable; concurrent reads are each logged under their own request id."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.db import fetch
from tests.support.identity import Edge
from tests.support.records import book, chart, new_doctor, new_patient, records_url


@pytest.fixture(scope="module")
def clinic(mesh):
    edge = Edge(mesh)
    doctor = new_doctor(edge, edge.admin(), mesh)
    yield edge, doctor
    edge.close()


def test_simultaneous_chart_updates_each_make_a_version_and_the_chart_stays_readable(clinic, mesh):
    edge, doctor = clinic
    patient = new_patient(edge, mesh)
    book(edge, mesh, patient, doctor)

    def update(i: int):
        return edge.http.patch(
            f"/v1/records/{patient.user_id}",
            params={"update_mask": "running_notes"},
            json={"runningNotes": f"running note {i}"},
            headers=doctor.auth,
        )

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(update, range(8)))
    assert [r.status_code for r in replies] == [200] * 8, [r.text for r in replies if r.status_code != 200]
    read = chart(edge, doctor, patient.user_id)
    assert read.status_code == 200, read.text
    versions = edge.http.get(f"/v1/records/{patient.user_id}/versions", headers=doctor.auth)
    assert versions.status_code == 200, versions.text
    numbers = sorted(int(v["version"]) for v in versions.json()["versions"])
    assert numbers == list(range(1, 9))
    notes = {v["runningNotes"] for v in versions.json()["versions"]}
    assert notes == {f"running note {i}" for i in range(8)}


def test_concurrent_reads_are_logged_each_under_its_own_request_id(clinic, mesh):
    edge, doctor = clinic
    patient = new_patient(edge, mesh)
    book(edge, mesh, patient, doctor)
    sent = [f"read-{uuid.uuid4()}" for _ in range(12)]

    def read(request_id: str):
        return edge.http.get(
            f"/v1/records/{patient.user_id}", headers={**doctor.auth, "x-request-id": request_id}
        ).status_code

    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(read, sent)) == [200] * 12
    logged = fetch(
        records_url(mesh),
        "SELECT request_id FROM access_log WHERE patient_id = $1::uuid AND method = 'GetChart'",
        patient.user_id,
    )
    assert sorted(r["request_id"] for r in logged) == sorted(sent)
