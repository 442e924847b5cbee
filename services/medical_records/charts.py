"""Chart content: reading and writing encounters, SOAP notes (every revision kept), diagnoses,
prescriptions, vital signs, running notes and allergies (every version kept), each through the
access gate and sealed field by field under the patient's data key (medical_records.crypto).
Every write publishes RecordUpdated (ids only)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime

from clinic.medical_records.v1 import events_pb2
from clinic_platform.auth import Caller, Role
from clinic_platform.convert import timestamp
from clinic_platform.errors import NotFound
from clinic_platform.outbox import Outbox
from medical_records import domain, icd10, store
from medical_records.access import Gate
from medical_records.crypto import DataKeyCache, FieldCipher, WrappedKey
from medical_records.domain import ALL_SECTIONS, Action, Section
from medical_records.idempotent import Once
from medical_records.store import access as access_sql
from medical_records.store import chart as sql

S = Section
# Listed sections of a chart, in the order GetChart has always named truncated ones.
SECTIONS = (S.ENCOUNTERS, S.NOTES, S.DIAGNOSES, S.PRESCRIPTIONS, S.VITAL_SIGNS)


def _id(value) -> str | None:
    return str(value) if value else None


class Charts:
    def __init__(self, gate: Gate, keys: DataKeyCache, outbox: Outbox) -> None:
        self.gate = gate
        self.keys = keys
        self.outbox = outbox

    # -- keys ---------------------------------------------------------------------------------
    async def _cipher(self, tx: store.Tx, patient_id: str, *, create: bool) -> FieldCipher | None:
        row = await sql.data_key(tx.conn, uuid.UUID(patient_id))
        if row is None:
            if not create:
                return None
            data_key, wrapped = self.keys.new_key(patient_id)
            row = await sql.add_data_key(tx.conn, uuid.UUID(patient_id), wrapped.kek_id, wrapped.wrapped)
            if bytes(row["wrapped_key"]) == wrapped.wrapped:
                return self.keys.remember(patient_id, data_key)
        return self.keys.cipher(patient_id, WrappedKey(row["kek_id"], bytes(row["wrapped_key"])))

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

    # -- reading ------------------------------------------------------------------------------
    async def chart(self, me: Caller, patient_id: str, limit: int, method: str = "GetChart") -> domain.Chart:
        sections = domain.NURSE_READS if me.role is Role.NURSE else ALL_SECTIONS
        # Opened inside the gate: a ciphertext failing its check is logged as an integrity error.
        async with self.gate.chart(me, patient_id, Action.READ, sections, method) as (tx, _):
            found = await sql.whole_chart(
                tx.conn, uuid.UUID(patient_id), limit + 1, sections, all_diagnoses=method == "ExportChart"
            )
            key = found["data_key"]
            if key is None:
                return domain.Chart(patient_id, None)
            cipher = self.keys.cipher(patient_id, WrappedKey(key["kek_id"], bytes(key["wrapped_key"])))
            truncated = [str(section) for section in SECTIONS if len(found[section]) > limit]
            rows = {section: found[section][:limit] for section in SECTIONS}
            version = found["version"]
            opened = self._version(cipher, patient_id, version, sections) if version else None
            chart = domain.Chart(
                patient_id,
                opened,
                encounters=[self._encounter(cipher, r) for r in rows[S.ENCOUNTERS]],
                notes=[self._note(cipher, r) for r in rows[S.NOTES]],
                diagnoses=[self._diagnosis(cipher, r) for r in rows[S.DIAGNOSES]],
                prescriptions=[self._prescription(cipher, r) for r in rows[S.PRESCRIPTIONS]],
                vital_signs=[self._vitals(cipher, r) for r in rows[S.VITAL_SIGNS]],
                truncated=truncated,
            )
        times = [
            e.create_time for e in (chart.encounters + chart.notes + chart.diagnoses + chart.prescriptions)
        ]
        times += [v.create_time for v in chart.vital_signs] + ([opened.create_time] if opened else [])
        times += [n.update_time for n in chart.notes]
        return replace(chart, update_time=max(times) if times else None)

    async def encounters(self, me: Caller, patient_id: str, after, limit: int) -> list[domain.Encounter]:
        async with self.gate.chart(
            me, patient_id, Action.READ, frozenset({S.ENCOUNTERS}), "ListEncounters"
        ) as (tx, _):
            cipher = await self._cipher(tx, patient_id, create=False)
            rows = (
                await sql.newest(tx.conn, "encounters", uuid.UUID(patient_id), after, limit) if cipher else []
            )
            return [self._encounter(cipher, r) for r in rows]

    async def revisions(self, me: Caller, patient_id: str, note_id: str, before, limit: int):
        async with self.gate.chart(
            me, patient_id, Action.READ, frozenset({S.NOTES}), "ListNoteRevisions"
        ) as (tx, _):
            if await sql.note(tx.conn, uuid.UUID(patient_id), uuid.UUID(note_id)) is None:
                raise NotFound(f"note {note_id} not found in this chart")
            cipher = await self._cipher(tx, patient_id, create=False)
            rows = await sql.revisions(tx.conn, uuid.UUID(note_id), before, limit)
            return [
                domain.NoteRevision(
                    r["revision"], self._soap(cipher, patient_id, r), str(r["author_id"]), r["create_time"]
                )
                for r in rows
            ]

    async def versions(self, me: Caller, patient_id: str, before, limit: int) -> list[domain.ChartVersion]:
        sections = frozenset({S.RUNNING_NOTES, S.ALLERGIES})
        async with self.gate.chart(me, patient_id, Action.READ, sections, "ListChartVersions") as (tx, _):
            cipher = await self._cipher(tx, patient_id, create=False)
            rows = await sql.versions(tx.conn, uuid.UUID(patient_id), before, limit) if cipher else []
            return [self._version(cipher, patient_id, r, sections) for r in rows]

    # -- opening rows -------------------------------------------------------------------------
    def _version(self, c: FieldCipher, patient_id: str, r, sections) -> domain.ChartVersion:
        row_id = f"{patient_id}/{r['version']}"
        notes = (
            c.open("chart_versions", row_id, "running_notes", r["running_notes"])
            if S.RUNNING_NOTES in sections
            else ""
        )
        allergies = json.loads(c.open("chart_versions", row_id, "allergies", r["allergies"]))
        return domain.ChartVersion(
            r["version"],
            notes,
            [domain.Allergy(**a) for a in allergies],
            str(r["author_id"]),
            r["create_time"],
        )

    def _encounter(self, c: FieldCipher, r) -> domain.Encounter:
        return domain.Encounter(
            str(r["id"]),
            str(r["patient_id"]),
            str(r["clinician_id"]),
            _id(r["appointment_id"]),
            r["encounter_time"],
            c.open("encounters", str(r["id"]), "chief_complaint", r["chief_complaint"]),
            r["create_time"],
        )

    def _soap(self, c: FieldCipher, patient_id: str, r) -> domain.Soap:
        row_id = str(r["revision_id"] if "revision_id" in r else r["id"])
        return domain.Soap(*(c.open("note_revisions", row_id, name, r[name]) for name in domain.SOAP))

    def _note(self, c: FieldCipher, r) -> domain.Note:
        return domain.Note(
            str(r["id"]),
            str(r["patient_id"]),
            _id(r["encounter_id"]),
            str(r["author_id"]),
            self._soap(c, str(r["patient_id"]), r),
            r["revision"],
            r["create_time"],
            r["update_time"],
        )

    def _diagnosis(self, c: FieldCipher, r) -> domain.Diagnosis:
        code = c.open("diagnoses", str(r["id"]), "code", r["code"])
        return domain.Diagnosis(
            str(r["id"]),
            str(r["patient_id"]),
            _id(r["encounter_id"]),
            code,
            c.open("diagnoses", str(r["id"]), "description", r["description"]),
            icd10.title(code),
            r["status"],
            str(r["diagnosed_by"]),
            r["create_time"],
            r["update_time"],
        )

    def _prescription(self, c: FieldCipher, r) -> domain.Prescription:
        rid = str(r["id"])
        fields = {
            f: c.open("prescriptions", rid, f, r[f])
            for f in ("drug", "strength", "dose", "route", "frequency")
        }
        return domain.Prescription(
            id=rid,
            patient_id=str(r["patient_id"]),
            encounter_id=_id(r["encounter_id"]),
            prescriber_id=str(r["prescriber_id"]),
            duration_days=r["duration_days"],
            status=r["status"],
            create_time=r["create_time"],
            update_time=r["update_time"],
            **fields,
        )

    def _vitals(self, c: FieldCipher, r) -> domain.VitalSigns:
        values = json.loads(c.open("vital_signs", str(r["id"]), "measurements", r["measurements"]))
        return domain.VitalSigns(
            str(r["id"]),
            str(r["patient_id"]),
            _id(r["encounter_id"]),
            str(r["recorded_by"]),
            r["measure_time"],
            values,
            r["create_time"],
        )

    # -- writing ------------------------------------------------------------------------------
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
            cipher = await self._cipher(tx, patient_id, create=True)
            pid = uuid.UUID(patient_id)
            current = await sql.latest_version(tx.conn, pid)
            before = self._version(cipher, patient_id, current, ALL_SECTIONS) if current else None
            notes = running_notes if "running_notes" in paths else (before.running_notes if before else "")
            kept = allergies if "allergies" in paths else (before.allergies if before else [])
            version = (current["version"] if current else 0) + 1
            row_id = f"{patient_id}/{version}"
            now = datetime.now(UTC)
            await sql.add_version(
                tx.conn,
                pid,
                cipher.seal("chart_versions", row_id, "running_notes", notes),
                cipher.seal("chart_versions", row_id, "allergies", json.dumps([asdict(a) for a in kept])),
                uuid.UUID(me.user_id),
                now,
            )
            await self._updated(tx, me, patient_id, "", now)
        return await self.chart(me, patient_id, 200, "UpdateChart")

    async def add_encounter(self, me, patient_id, appointment_id, encounter_time, complaint, *, once: Once):
        async with self.gate.chart(
            me, patient_id, Action.WRITE, frozenset({S.ENCOUNTERS}), "CreateEncounter"
        ) as (tx, _):
            if (earlier := await once.earlier(tx, me)) is not None:
                return earlier
            if appointment_id:
                await self._check_appointment(tx, me, patient_id, appointment_id)
            cipher = await self._cipher(tx, patient_id, create=True)
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
            return await once.done(tx, me, self._encounter(cipher, row))

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
            cipher = await self._cipher(tx, patient_id, create=True)
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
                tx, me, self._note(cipher, await sql.note(tx.conn, uuid.UUID(patient_id), nid))
            )

    async def amend_note(self, me, patient_id, note_id, changes: dict[str, str]) -> domain.Note:
        async with self.gate.chart(me, patient_id, Action.WRITE, frozenset({S.NOTES}), "UpdateNote") as (
            tx,
            _,
        ):
            row = await sql.note(tx.conn, uuid.UUID(patient_id), uuid.UUID(note_id), lock=True)
            if row is None:
                raise NotFound(f"note {note_id} not found in this chart")
            cipher = await self._cipher(tx, patient_id, create=True)
            note = self._note(cipher, row)
            domain.may_amend(me, note)
            soap = note.soap.amended(changes).check()
            now = datetime.now(UTC)
            await self._write_revision(
                tx, cipher, me, patient_id, row["id"], revision=note.revision + 1, soap=soap, now=now
            )
            await self._updated(tx, me, patient_id, note_id, now)
            return self._note(cipher, await sql.note(tx.conn, uuid.UUID(patient_id), uuid.UUID(note_id)))

    async def add_diagnosis(self, me, patient_id, encounter_id, code: str, description: str, *, once: Once):
        code, title = icd10.checked(code)
        async with self.gate.chart(
            me, patient_id, Action.WRITE, frozenset({S.DIAGNOSES}), "CreateDiagnosis"
        ) as (tx, _):
            if (earlier := await once.earlier(tx, me)) is not None:
                return earlier
            await self._encounter_exists(tx, patient_id, encounter_id)
            cipher = await self._cipher(tx, patient_id, create=True)
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
            return await once.done(tx, me, self._diagnosis(cipher, row))

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
            cipher = await self._cipher(tx, patient_id, create=True)
            now = datetime.now(UTC)
            sealed = (
                cipher.seal("diagnoses", diagnosis_id, "description", description)
                if description is not None
                else None
            )
            row = await sql.update_diagnosis(tx.conn, row["id"], sealed, status or row["status"], now)
            await self._updated(tx, me, patient_id, diagnosis_id, now)
            return self._diagnosis(cipher, row)

    async def add_prescription(
        self, me, patient_id, encounter_id, fields: dict[str, str], duration_days: int, *, once: Once
    ):
        async with self.gate.chart(
            me, patient_id, Action.WRITE, frozenset({S.PRESCRIPTIONS}), "CreatePrescription"
        ) as (tx, _):
            if (earlier := await once.earlier(tx, me)) is not None:
                return earlier
            await self._encounter_exists(tx, patient_id, encounter_id)
            cipher = await self._cipher(tx, patient_id, create=True)
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
            return await once.done(tx, me, self._prescription(cipher, row))

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
            cipher = await self._cipher(tx, patient_id, create=True)
            await self._updated(tx, me, patient_id, prescription_id, now)
            return self._prescription(cipher, row)

    async def add_vitals(self, me, patient_id, encounter_id, measure_time, values: dict, *, once: Once):
        domain.check_vitals(values)
        async with self.gate.chart(
            me, patient_id, Action.WRITE, frozenset({S.VITAL_SIGNS}), "CreateVitalSigns"
        ) as (tx, _):
            if (earlier := await once.earlier(tx, me)) is not None:
                return earlier
            await self._encounter_exists(tx, patient_id, encounter_id)
            cipher = await self._cipher(tx, patient_id, create=True)
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
            return await once.done(tx, me, self._vitals(cipher, row))
