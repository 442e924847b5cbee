"""A chart's sealed rows: the patient's field cipher (a data key made on the first write) and
opening each table's row into its domain object. A field that fails its check raises
crypto.DataLoss (the gate logs it as an integrity error)."""

from __future__ import annotations

import base64
import json
import uuid

from medical_records import domain, icd10, store
from medical_records.crypto import DataKeyCache, FieldCipher, Tampered, WrappedKey
from medical_records.policy import Section
from medical_records.store import chart as sql

# Free text a clinician writes outside the chart (an access request's reason, a break-the-glass
# justification, and their copies in the access log) may be clinical too: it is stored sealed, as
# text in its text column. Text the service writes itself ("integrity check failed") stays plain.
SEALED_TEXT = "sealed:"


def seal_text(cipher: FieldCipher, table: str, row_id: str, field: str, value: str) -> str:
    if not value:
        return ""
    return SEALED_TEXT + base64.b64encode(cipher.seal(table, row_id, field, value)).decode()


def open_text(cipher: FieldCipher | None, table: str, row_id: str, field: str, stored: str) -> str:
    if not stored.startswith(SEALED_TEXT):
        return stored
    if cipher is None:
        raise Tampered(table, row_id, field)
    return cipher.open(table, row_id, field, base64.b64decode(stored[len(SEALED_TEXT) :]))


def _id(value) -> str | None:
    return str(value) if value else None


async def cipher(tx: store.Tx, keys: DataKeyCache, patient_id: str, *, create: bool) -> FieldCipher | None:
    """The patient's field cipher; a data key is made on the first write (`create`)."""
    row = await sql.data_key(tx.conn, uuid.UUID(patient_id))
    if row is None:
        if not create:
            return None
        data_key, wrapped = keys.new_key(patient_id)
        row = await sql.add_data_key(tx.conn, uuid.UUID(patient_id), wrapped.kek_id, wrapped.wrapped)
        if bytes(row["wrapped_key"]) == wrapped.wrapped:
            return keys.remember(patient_id, wrapped, data_key)
    return keys.cipher(patient_id, WrappedKey(row["kek_id"], bytes(row["wrapped_key"])))


def version(c: FieldCipher, patient_id: str, r, sections) -> domain.ChartVersion:
    row_id = f"{patient_id}/{r['version']}"
    notes = (
        c.open("chart_versions", row_id, "running_notes", r["running_notes"])
        if Section.RUNNING_NOTES in sections
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


def encounter(c: FieldCipher, r) -> domain.Encounter:
    return domain.Encounter(
        str(r["id"]),
        str(r["patient_id"]),
        str(r["clinician_id"]),
        _id(r["appointment_id"]),
        r["encounter_time"],
        c.open("encounters", str(r["id"]), "chief_complaint", r["chief_complaint"]),
        r["create_time"],
    )


def soap(c: FieldCipher, r) -> domain.Soap:
    row_id = str(r["revision_id"] if "revision_id" in r else r["id"])
    return domain.Soap(*(c.open("note_revisions", row_id, name, r[name]) for name in domain.SOAP))


def note(c: FieldCipher, r) -> domain.Note:
    return domain.Note(
        str(r["id"]),
        str(r["patient_id"]),
        _id(r["encounter_id"]),
        str(r["author_id"]),
        soap(c, r),
        r["revision"],
        r["create_time"],
        r["update_time"],
    )


def diagnosis(c: FieldCipher, r) -> domain.Diagnosis:
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


def prescription(c: FieldCipher, r) -> domain.Prescription:
    rid = str(r["id"])
    fields = {
        f: c.open("prescriptions", rid, f, r[f]) for f in ("drug", "strength", "dose", "route", "frequency")
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


def vitals(c: FieldCipher, r) -> domain.VitalSigns:
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
