"""What the medical records service publishes: ids only. After a chart is written with a unique
marker, a drug and a diagnosis, no event on its topic (key, headers or payload) holds any of them."""

from __future__ import annotations

import uuid

from clinic_platform.events import topic_for
from tests.support.identity import Edge
from tests.support.kafka import read_topic
from tests.support.polling import until
from tests.support.records import book, new_doctor, new_patient, note

DRUG = "amoxicillin"
DIAGNOSIS_TITLE = "Essential (primary) hypertension"  # I10's title in ICD-10-CM


def test_no_event_carries_a_note_a_drug_or_a_diagnosis(mesh):
    edge = Edge(mesh)
    try:
        doctor = new_doctor(edge, edge.admin(), mesh)
        patient = new_patient(edge, mesh)
        book(edge, mesh, patient, doctor)
        pid = patient.user_id
        marker = f"marker-{uuid.uuid4().hex}"
        written = [
            note(edge, doctor, pid, subjective=f"{marker} chest tightness", assessment=f"{marker} angina?"),
            edge.http.post(
                f"/v1/records/{pid}/diagnoses",
                json={"code": "I10", "description": f"{marker} hypertension"},
                headers=doctor.auth,
            ),
            edge.http.post(
                f"/v1/records/{pid}/prescriptions",
                json={"drug": DRUG, "strength": f"500 mg {marker}", "dose": "1 capsule", "frequency": "tid"},
                headers=doctor.auth,
            ),
            edge.http.post(
                f"/v1/records/{pid}/vitals", json={"heartRateBpm": 123, "weightKg": 71.3}, headers=doctor.auth
            ),
        ]
        assert [reply.status_code for reply in written] == [200] * 4, [r.text for r in written]

        def published():
            found = [
                r
                for r in read_topic(mesh.kafka_bootstrap, topic_for("medical_records"))
                if r.key == pid.encode()
            ]
            return len(found) >= 4 and found

        records = until(published, within=30, what="the chart's four RecordUpdated events on the topic")
        types = {r.headers.get("ce_type") for r in records}
        assert types == {b"clinic.medical_records.v1.RecordUpdated"}
        for record in records:
            raw = b"".join(
                [record.key or b"", record.value or b"", *(v or b"" for v in record.headers.values())]
            )
            for secret in (marker, DRUG, DIAGNOSIS_TITLE, "hypertension", "chest tightness", "500 mg"):
                assert secret.encode() not in raw, f"an event carries {secret!r}"
    finally:
        edge.close()
