"""Chart content at rest and the access log under attack: no plaintext in any table, the data
directory (WAL included) or a log; a ciphertext moved between patients does not open and is
logged; a tampered log entry is found; the service cannot edit its log; bad input changes
nothing; KEK rotation while reads go on loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest

from clinic.medical_records.v1 import medical_records_service_pb2 as pb
from clinic.medical_records.v1 import medical_records_service_pb2_grpc as rpc
from clinic.medical_records.v1 import resources_pb2
from medical_records.crypto import new_kek_value
from tests.support.db import fetch
from tests.support.identity import Edge
from tests.support.records import (
    book,
    chart,
    log_entries,
    new_doctor,
    new_patient,
    note,
    records_url,
    restart_records,
)


@pytest.fixture(scope="module")
def clinic(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctor = new_doctor(edge, admin, mesh)
    yield edge, doctor
    edge.close()


def patient_in_care(edge, mesh, doctor):
    patient = new_patient(edge, mesh)
    book(edge, mesh, patient, doctor)
    return patient


def superuser_url(mesh) -> str:
    return mesh.postgres_admin_url.replace("/postgres?", "/clinic_medical_records?", 1)


def files_containing(folder: Path, marker: bytes) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if marker in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def test_no_table_no_wal_segment_and_no_log_line_holds_a_note(clinic, mesh):
    edge, doctor = clinic
    patient = patient_in_care(edge, mesh, doctor)
    marker = f"marker-{uuid.uuid4().hex}"
    # With request_ids, as a retrying client sends them: the answers kept for retries hold the text.
    written = edge.http.post(
        f"/v1/records/{patient.user_id}/notes",
        params={"request_id": str(uuid.uuid4())},
        json={"subjective": f"patient says {marker}", "plan": marker},
        headers=doctor.auth,
    )
    assert written.status_code == 200, written.text
    diagnosis = edge.http.post(
        f"/v1/records/{patient.user_id}/diagnoses",
        params={"request_id": str(uuid.uuid4())},
        json={"code": "F32.A", "description": marker},
        headers=doctor.auth,
    )
    assert diagnosis.status_code == 200, diagnosis.text
    assert marker in chart(edge, doctor, patient.user_id).text  # it is there, and it reads back
    # A clinician's reasons outside the chart may be clinical too: sealed the same way.
    stranger = new_doctor(edge, edge.admin(), mesh)
    asked = edge.http.post(
        f"/v1/records/{patient.user_id}/accessRequests",
        json={"reason": f"second opinion on {marker}"},
        headers=stranger.auth,
    )
    assert asked.status_code == 200, asked.text
    glass = edge.http.post(
        f"/v1/records/{patient.user_id}:breakGlass",
        json={"justification": f"collapsed in the waiting room, {marker}"},
        headers=doctor.auth,
    )
    assert glass.status_code == 200, glass.text
    shown = [
        edge.http.get(f"/v1/records/{patient.user_id}/{part}", headers=patient.auth).text
        for part in ("accessRequests", "accessGrants", "accessLog")
    ]
    assert all(marker in text for text in shown)  # the patient reads all three

    tables = [
        r["tablename"]
        for r in fetch(superuser_url(mesh), "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ]
    for table in tables:
        rows = fetch(
            superuser_url(mesh),
            f"SELECT count(*) AS n FROM {table} t WHERE t::text LIKE $1",  # noqa: S608 - from pg_tables
            f"%{marker}%",
        )
        assert rows[0]["n"] == 0, table
    fetch(superuser_url(mesh), "CHECKPOINT")  # everything on disk: heap files and WAL segments
    assert files_containing(mesh.postgres.data, marker.encode()) == []
    assert files_containing(mesh.state_dir / "log", marker.encode()) == []


def test_a_ciphertext_moved_to_another_patient_does_not_open_and_is_logged(clinic, mesh):
    edge, doctor = clinic
    first, second = patient_in_care(edge, mesh, doctor), patient_in_care(edge, mesh, doctor)
    secret = f"secret-{uuid.uuid4().hex}"
    assert note(edge, doctor, first.user_id, subjective=secret).status_code == 200
    assert note(edge, doctor, second.user_id, subjective="nothing special").status_code == 200
    fetch(
        superuser_url(mesh),
        "UPDATE note_revisions SET subjective ="
        " (SELECT subjective FROM note_revisions WHERE patient_id = $1::uuid) WHERE patient_id = $2::uuid",
        first.user_id,
        second.user_id,
    )

    reply = chart(edge, second, second.user_id)
    assert reply.status_code == 500
    body = reply.json()
    assert body["code"] == 15  # DATA_LOSS
    assert "integrity check" in body["message"] and secret not in reply.text
    assert chart(edge, first, first.user_id).status_code == 200  # the other chart is untouched
    outcomes = [(e["method"], e["outcome"]) for e in log_entries(mesh, second.user_id)]
    assert outcomes[-1] == ("GetChart", "INTEGRITY_ERROR")


def verify(mesh) -> dict:
    env = {**os.environ, "DATABASE_URL": mesh.database_urls["medical_records"]}
    done = subprocess.run(
        [sys.executable, "-m", "medical_records.audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(done.stdout)


def test_the_service_cannot_edit_its_log_and_a_superusers_edit_is_found(clinic, mesh):
    edge, doctor = clinic
    patient = patient_in_care(edge, mesh, doctor)
    assert chart(edge, doctor, patient.user_id).status_code == 200
    assert verify(mesh)["intact"] is True

    for statement in ("UPDATE access_log SET reason = 'x'", "DELETE FROM access_log", "TRUNCATE access_log"):
        with pytest.raises(Exception, match=r"permission denied|append-only"):
            fetch(records_url(mesh), statement)

    last = fetch(
        records_url(mesh),
        "SELECT sequence, method FROM access_log WHERE patient_id = $1::uuid ORDER BY sequence DESC LIMIT 1",
        patient.user_id,
    )[0]
    change = "UPDATE access_log SET method = $1 WHERE sequence = $2"
    fetch_as_replica(superuser_url(mesh), change, "ListEncounters", last["sequence"])
    verdict = verify(mesh)
    assert (verdict["intact"], verdict["first_broken_sequence"]) == (False, last["sequence"])
    assert f"entry {last['sequence']}" in verdict["problem"]
    fetch_as_replica(superuser_url(mesh), change, last["method"], last["sequence"])  # put it back
    assert verify(mesh)["intact"] is True


def fetch_as_replica(url: str, statement: str, *args) -> None:
    """As superuser with triggers off (session_replication_role), as an attacker with the keys would."""

    async def run():
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SET session_replication_role = replica")
            await conn.execute(statement, *args)
        finally:
            await conn.close()

    asyncio.run(run())


def test_bad_input_is_refused_naming_the_field_and_writes_nothing(clinic, mesh):
    edge, doctor = clinic
    patient = patient_in_care(edge, mesh, doctor)
    pid = patient.user_id
    before = log_entries(mesh, pid)

    def refused(path: str, body: dict, field: str, status: int = 400) -> None:
        reply = edge.http.post(f"/v1/records/{pid}/{path}", json=body, headers=doctor.auth)
        assert reply.status_code == status, reply.text
        assert field in reply.json()["message"], reply.text

    refused("diagnoses", {"code": "Q99.999"}, "diagnosis.code")
    refused("notes", {}, "note")
    refused("notes", {"subjective": "x" * 60_000}, "note.subjective")
    refused("vitals", {"heartRateBpm": 900}, "vital_signs.heart_rate_bpm")
    refused("vitals", {"temperatureCelsius": 52.0}, "vital_signs.temperature_celsius")
    refused("vitals", {}, "vital_signs")
    refused("prescriptions", {"drug": "x", "dose": "1"}, "prescription.frequency")
    unknown = str(uuid.uuid4())
    reply = edge.http.post(f"/v1/records/{unknown}/notes", json={"subjective": "x"}, headers=doctor.auth)
    assert reply.status_code == 404
    assert chart(edge, doctor, unknown).status_code == 404

    # A megabyte note straight to the service (the edge refuses bodies over 64 KiB with 413 first).
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.services['medical_records']}") as channel:
        stub = rpc.MedicalRecordsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateNote(
                pb.CreateNoteRequest(patient_id=pid, note=resources_pb2.Note(plan="x" * 1_000_000)),
                metadata=[("authorization", f"Bearer {doctor.access_token}")],
            )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "note.plan" in err.value.details()

    assert (
        fetch(records_url(mesh), "SELECT count(*) AS n FROM note_revisions WHERE patient_id = $1::uuid", pid)[
            0
        ]["n"]
        == 0
    )
    assert (
        fetch(records_url(mesh), "SELECT count(*) AS n FROM diagnoses WHERE patient_id = $1::uuid", pid)[0][
            "n"
        ]
        == 0
    )
    assert (
        fetch(records_url(mesh), "SELECT count(*) AS n FROM vital_signs WHERE patient_id = $1::uuid", pid)[0][
            "n"
        ]
        == 0
    )
    assert log_entries(mesh, pid) == before


def test_kek_rotation_while_charts_are_read_loses_nothing(clinic, mesh):
    edge, doctor = clinic
    patients = [patient_in_care(edge, mesh, doctor) for _ in range(6)]
    for i, p in enumerate(patients):
        assert note(edge, doctor, p.user_id, subjective=f"note {i}").status_code == 200
    old = mesh.records_secrets()["records_kek"]
    new = new_kek_value(f"rotated-{uuid.uuid4().hex[:6]}")
    restart_records(edge, mesh, RECORDS_KEK=new, RECORDS_OLD_KEKS=old)

    failures: list[str] = []
    reads = [0]
    stop = threading.Event()

    def reader(person, expected: str) -> None:
        local = Edge(mesh)
        try:
            while not stop.is_set():
                reply = chart(local, person, person.user_id)
                if reply.status_code != 200 or expected not in reply.text:
                    failures.append(f"{reply.status_code}: {reply.text[:200]}")
                reads[0] += 1
        finally:
            local.close()

    threads = [threading.Thread(target=reader, args=(p, f"note {i}")) for i, p in enumerate(patients)]
    for t in threads:
        t.start()
    env = {
        **os.environ,
        "DATABASE_URL": mesh.database_urls["medical_records"],
        "RECORDS_KEK": new,
        "RECORDS_OLD_KEKS": old,
    }
    done = subprocess.run(
        [sys.executable, "-m", "medical_records.rotate_kek"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    stop.set()
    for t in threads:
        t.join()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["remaining"] == 0
    kek_ids = {r["kek_id"] for r in fetch(records_url(mesh), "SELECT DISTINCT kek_id FROM data_keys")}
    assert kek_ids == {new.split(":")[0]}
    assert failures == [] and reads[0] >= len(patients)
    # After a restart (no cached data keys) every chart opens under the new KEK alone.
    restart_records(edge, mesh, RECORDS_OLD_KEKS="")
    for i, p in enumerate(patients):
        reply = chart(edge, p, p.user_id)
        assert reply.status_code == 200 and f"note {i}" in reply.text
