"""Writing a chart through the gate: running notes and allergies (a new version each time),
encounters, SOAP notes (every amendment a new revision), diagnoses, prescriptions and vital signs,
each field sealed under the patient's data key. Every write publishes RecordUpdated (ids only)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import UTC, datetime

from clinic.medical_records.v1 import events_pb2
from clinic_platform.auth import Caller
from clinic_platform.convert import timestamp
from clinic_platform.errors import NotFound
from clinic_platform.outbox import Outbox
from medical_records import domain, icd10, sealed_rows, store
from medical_records.chart_reads import ChartReads
from medical_records.crypto import DataKeyCache
from medical_records.gate import Gate
from medical_records.idempotent import Once
from medical_records.policy import ALL_SECTIONS, Action, Section
from medical_records.store import access as access_sql
from medical_records.store import chart as sql

S = Section


class ChartWrites:
    def __init__(self, gate: Gate, keys: DataKeyCache, outbox: Outbox, reads: ChartReads) -> None:
        self.gate = gate
        self.keys = keys
        self.outbox = outbox
        self.reads = reads

    async def _updated(self, tx: store.Tx, me: Caller, patient_id: str, entry_id: str, now: datetime) -> None:
        event = events_pb2.RecordUpdated(
            patient_id=patient_id, entry_id=entry_id, author_id=me.user_id, update_time=timestamp(now)
        )
        await self.outbox.add(tx.session, event, aggregate_id=patient_id)

    async def _encounter_exists(self, tx: store.Tx, patient_id: str, encounter_id: str | None) -> None:
        if (
            encounter_id
            and await sql.encounter(tx.conn, uuid.UUID(patient_id), uuid.UUID(encounter_id)) is None
        ):
            raise NotFound(f"encounter {encounter_id} not found in this chart")

    async def _check_appointment(self, tx: store.Tx, me: Caller, patient_id: str, appointment_id: str):
        row = await access_sql.care_appointment(tx.conn, uuid.UUID(appointment_id))
        found = row and domain.CareAppointment(str(row["patient_id"]), str(row["doctor_id"]), row["status"])
        domain.check_encounter_appointment(me, patient_id, found or None)

    async def update_chart(
        self,
        me: Caller,
        patient_id: str,
        paths: set[str],
        running_notes: str,
        allergies: list[domain.Allergy],
    ) -> domain.Chart:
        sections = frozenset(Section(p) for p in paths)
        async with self.gate.chart(me, patient_id, Action.WRITE, sections, "UpdateChart") as (tx, _):
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=True)
            pid = uuid.UUID(patient_id)
            await sql.lock_versions(tx.conn, pid)
            current = await sql.latest_version(tx.conn, pid)
            before = sealed_rows.version(cipher, patient_id, current, ALL_SECTIONS) if current else None
            notes = running_notes if "running_notes" in paths else (before.running_notes if before else "")
            kept = allergies if "allergies" in paths else (before.allergies if before else [])
            version = (current["version"] if current else 0) + 1
            row_id = f"{patient_id}/{version}"
            now = datetime.now(UTC)
            await sql.add_version(
                tx.conn,
                pid,
                version,
                cipher.seal("chart_versions", row_id, "running_notes", notes),
                cipher.seal("chart_versions", row_id, "allergies", json.dumps([asdict(a) for a in kept])),
                uuid.UUID(me.user_id),
                now,
            )
            await self._updated(tx, me, patient_id, "", now)
        return await self.reads.chart(me, patient_id, 200, "UpdateChart")

    async def add_encounter(self, me, patient_id, appointment_id, encounter_time, complaint, *, once: Once):
        async with self.gate.chart(
            me, patient_id, Action.WRITE, frozenset({S.ENCOUNTERS}), "CreateEncounter"
        ) as (tx, _):
            if (earlier := await once.earlier(tx, me)) is not None:
                return earlier
            if appointment_id:
                await self._check_appointment(tx, me, patient_id, appointment_id)
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=True)
            now = datetime.now(UTC)
            eid = uuid.uuid4()
            row = await sql.add_encounter(
                tx.conn,
                (
                    eid,
                    uuid.UUID(patient_id),
                    uuid.UUID(me.user_id),
                    uuid.UUID(appointment_id) if appointment_id else None,
                    encounter_time or now,
                    cipher.seal("encounters", str(eid), "chief_complaint", complaint),
                    now,
                ),
            )
            await self._updated(tx, me, patient_id, str(eid), now)
            return await once.done(tx, me, sealed_rows.encounter(cipher, row))

    async def _write_revision(self, tx, cipher, me, patient_id, note_id, *, revision, soap, now) -> None:
        rid = uuid.uuid4()
        sealed = [cipher.seal("note_revisions", str(rid), name, getattr(soap, name)) for name in domain.SOAP]
        await sql.add_revision(
            tx.conn, (rid, note_id, uuid.UUID(patient_id), revision, uuid.UUID(me.user_id), *sealed, now)
        )

    async def add_note(self, me, patient_id, encounter_id, soap: domain.Soap, *, once: Once):
        soap.check()
        async with self.gate.chart(me, patient_id, Action.WRITE, frozenset({S.NOTES}), "CreateNote") as (
            tx,
            _,
        ):
            if (earlier := await once.earlier(tx, me)) is not None:
                return earlier
            await self._encounter_exists(tx, patient_id, encounter_id)
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=True)
            now = datetime.now(UTC)
            nid = uuid.uuid4()
            await sql.add_note(
                tx.conn,
                nid,
                uuid.UUID(patient_id),
                uuid.UUID(encounter_id) if encounter_id else None,
                uuid.UUID(me.user_id),
                now,
            )
            await self._write_revision(tx, cipher, me, patient_id, nid, revision=1, soap=soap, now=now)
            await self._updated(tx, me, patient_id, str(nid), now)
            return await once.done(
                tx, me, sealed_rows.note(cipher, await sql.note(tx.conn, uuid.UUID(patient_id), nid))
            )

    async def amend_note(self, me, patient_id, note_id, changes: dict[str, str]) -> domain.Note:
        async with self.gate.chart(me, patient_id, Action.WRITE, frozenset({S.NOTES}), "UpdateNote") as (
            tx,
            _,
        ):
            row = await sql.note(tx.conn, uuid.UUID(patient_id), uuid.UUID(note_id), lock=True)
            if row is None:
                raise NotFound(f"note {note_id} not found in this chart")
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=True)
            note = sealed_rows.note(cipher, row)
            domain.may_amend(me, note)
            soap = note.soap.amended(changes).check()
            now = datetime.now(UTC)
            await self._write_revision(
                tx, cipher, me, patient_id, row["id"], revision=note.revision + 1, soap=soap, now=now
            )
            await self._updated(tx, me, patient_id, note_id, now)
            return sealed_rows.note(
                cipher, await sql.note(tx.conn, uuid.UUID(patient_id), uuid.UUID(note_id))
            )

    async def add_diagnosis(self, me, patient_id, encounter_id, code: str, description: str, *, once: Once):
        code, title = icd10.checked(code)
        async with self.gate.chart(
            me, patient_id, Action.WRITE, frozenset({S.DIAGNOSES}), "CreateDiagnosis"
        ) as (tx, _):
            if (earlier := await once.earlier(tx, me)) is not None:
                return earlier
            await self._encounter_exists(tx, patient_id, encounter_id)
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=True)
            now = datetime.now(UTC)
            did = uuid.uuid4()
            row = await sql.add_diagnosis(
                tx.conn,
                (
                    did,
                    uuid.UUID(patient_id),
                    uuid.UUID(encounter_id) if encounter_id else None,
                    cipher.seal("diagnoses", str(did), "code", code),
                    cipher.seal("diagnoses", str(did), "description", description.strip() or title),
                    "ACTIVE",
                    uuid.UUID(me.user_id),
                    now,
                ),
            )
            await self._updated(tx, me, patient_id, str(did), now)
            return await once.done(tx, me, sealed_rows.diagnosis(cipher, row))

    async def change_diagnosis(
        self, me, patient_id, diagnosis_id, status: str | None, description: str | None
    ):
        async with self.gate.chart(
            me, patient_id, Action.WRITE, frozenset({S.DIAGNOSES}), "UpdateDiagnosis"
        ) as (tx, _):
            row = await sql.diagnosis(tx.conn, uuid.UUID(patient_id), uuid.UUID(diagnosis_id), lock=True)
            if row is None:
                raise NotFound(f"diagnosis {diagnosis_id} not found in this chart")
            if row["status"] == "ENTERED_IN_ERROR" or status:
                status = domain.diagnosis_status_change(row["status"], status or row["status"])
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=True)
            now = datetime.now(UTC)
            sealed = (
                cipher.seal("diagnoses", diagnosis_id, "description", description)
                if description is not None
                else None
            )
            row = await sql.update_diagnosis(tx.conn, row["id"], sealed, status or row["status"], now)
            await self._updated(tx, me, patient_id, diagnosis_id, now)
            return sealed_rows.diagnosis(cipher, row)

    async def add_prescription(
        self, me, patient_id, encounter_id, fields: dict[str, str], duration_days: int, *, once: Once
    ):
        async with self.gate.chart(
            me, patient_id, Action.WRITE, frozenset({S.PRESCRIPTIONS}), "CreatePrescription"
        ) as (tx, _):
            if (earlier := await once.earlier(tx, me)) is not None:
                return earlier
            await self._encounter_exists(tx, patient_id, encounter_id)
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=True)
            now = datetime.now(UTC)
            pid = uuid.uuid4()
            sealed = [
                cipher.seal("prescriptions", str(pid), f, fields[f])
                for f in ("drug", "strength", "dose", "route", "frequency")
            ]
            row = await sql.add_prescription(
                tx.conn,
                (
                    pid,
                    uuid.UUID(patient_id),
                    uuid.UUID(encounter_id) if encounter_id else None,
                    uuid.UUID(me.user_id),
                    *sealed,
                    duration_days,
                    "ACTIVE",
                    now,
                ),
            )
            await self._updated(tx, me, patient_id, str(pid), now)
            return await once.done(tx, me, sealed_rows.prescription(cipher, row))

    async def change_prescription(self, me, patient_id, prescription_id, status: str):
        async with self.gate.chart(
            me, patient_id, Action.WRITE, frozenset({S.PRESCRIPTIONS}), "UpdatePrescription"
        ) as (tx, _):
            row = await sql.prescription(
                tx.conn, uuid.UUID(patient_id), uuid.UUID(prescription_id), lock=True
            )
            if row is None:
                raise NotFound(f"prescription {prescription_id} not found in this chart")
            status = domain.prescription_status_change(row["status"], status)
            now = datetime.now(UTC)
            row = await sql.update_prescription(tx.conn, row["id"], status, now)
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=True)
            await self._updated(tx, me, patient_id, prescription_id, now)
            return sealed_rows.prescription(cipher, row)

    async def add_vitals(self, me, patient_id, encounter_id, measure_time, values: dict, *, once: Once):
        domain.check_vitals(values)
        async with self.gate.chart(
            me, patient_id, Action.WRITE, frozenset({S.VITAL_SIGNS}), "CreateVitalSigns"
        ) as (tx, _):
            if (earlier := await once.earlier(tx, me)) is not None:
                return earlier
            await self._encounter_exists(tx, patient_id, encounter_id)
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=True)
            now = datetime.now(UTC)
            vid = uuid.uuid4()
            row = await sql.add_vitals(
                tx.conn,
                (
                    vid,
                    uuid.UUID(patient_id),
                    uuid.UUID(encounter_id) if encounter_id else None,
                    uuid.UUID(me.user_id),
                    measure_time or now,
                    cipher.seal("vital_signs", str(vid), "measurements", json.dumps(values)),
                    now,
                ),
            )
            await self._updated(tx, me, patient_id, str(vid), now)
            return await once.done(tx, me, sealed_rows.vitals(cipher, row))
