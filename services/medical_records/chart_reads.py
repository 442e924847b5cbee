"""Reading a chart through the gate: the whole chart (GetChart, ExportChart) in one statement,
encounters, a note's revisions, and the versions of running notes and allergies."""

from __future__ import annotations

import uuid
from dataclasses import replace

from clinic_platform.auth import Caller, Role
from clinic_platform.errors import NotFound
from medical_records import domain, sealed_rows
from medical_records.crypto import DataKeyCache, WrappedKey
from medical_records.gate import Gate
from medical_records.policy import ALL_SECTIONS, NURSE_READS, Action, Section
from medical_records.store import chart as sql

S = Section
# Listed sections of a chart, in the order GetChart has always named truncated ones.
SECTIONS = (S.ENCOUNTERS, S.NOTES, S.DIAGNOSES, S.PRESCRIPTIONS, S.VITAL_SIGNS)


class ChartReads:
    def __init__(self, gate: Gate, keys: DataKeyCache) -> None:
        self.gate = gate
        self.keys = keys

    async def chart(
        self, me: Caller, patient_id: str, limit: int, method: str = "GetChart", *, whole: bool = False
    ) -> domain.Chart:
        """The chart as `me` may see it; `whole` asks for every section (an export), so a caller who
        may not see them all is refused (and the refusal logged) rather than given a part."""
        sections = NURSE_READS if me.role is Role.NURSE and not whole else ALL_SECTIONS
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
            opened = sealed_rows.version(cipher, patient_id, version, sections) if version else None
            chart = domain.Chart(
                patient_id,
                opened,
                encounters=[sealed_rows.encounter(cipher, r) for r in rows[S.ENCOUNTERS]],
                notes=[sealed_rows.note(cipher, r) for r in rows[S.NOTES]],
                diagnoses=[sealed_rows.diagnosis(cipher, r) for r in rows[S.DIAGNOSES]],
                prescriptions=[sealed_rows.prescription(cipher, r) for r in rows[S.PRESCRIPTIONS]],
                vital_signs=[sealed_rows.vitals(cipher, r) for r in rows[S.VITAL_SIGNS]],
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
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=False)
            rows = (
                await sql.newest(tx.conn, "encounters", uuid.UUID(patient_id), after, limit) if cipher else []
            )
            return [sealed_rows.encounter(cipher, r) for r in rows]

    async def revisions(self, me: Caller, patient_id: str, note_id: str, before, limit: int):
        async with self.gate.chart(
            me, patient_id, Action.READ, frozenset({S.NOTES}), "ListNoteRevisions"
        ) as (tx, _):
            if await sql.note(tx.conn, uuid.UUID(patient_id), uuid.UUID(note_id)) is None:
                raise NotFound(f"note {note_id} not found in this chart")
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=False)
            rows = await sql.revisions(tx.conn, uuid.UUID(note_id), before, limit)
            return [
                domain.NoteRevision(
                    r["revision"], sealed_rows.soap(cipher, r), str(r["author_id"]), r["create_time"]
                )
                for r in rows
            ]

    async def versions(self, me: Caller, patient_id: str, before, limit: int) -> list[domain.ChartVersion]:
        sections = frozenset({S.RUNNING_NOTES, S.ALLERGIES})
        async with self.gate.chart(me, patient_id, Action.READ, sections, "ListChartVersions") as (tx, _):
            cipher = await sealed_rows.cipher(tx, self.keys, patient_id, create=False)
            rows = await sql.versions(tx.conn, uuid.UUID(patient_id), before, limit) if cipher else []
            return [sealed_rows.version(cipher, patient_id, r, sections) for r in rows]
