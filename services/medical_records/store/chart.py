"""Chart content: data keys, chart versions, encounters, notes and their revisions, diagnoses,
prescriptions, vital signs. Content columns hold ciphertext (medical_records.crypto); ids,
authors, statuses and times are plain, so access rules and paging never need a key."""

from __future__ import annotations

import asyncpg

ENCOUNTER = "id, patient_id, clinician_id, appointment_id, encounter_time, chief_complaint, create_time"
NOTE = (
    "n.id, n.patient_id, n.encounter_id, n.author_id, n.revision, n.create_time, n.update_time,"
    " r.id AS revision_id, r.subjective, r.objective, r.assessment, r.plan"
)
REVISION = "id, revision, author_id, subjective, objective, assessment, plan, create_time"
DIAGNOSIS = "id, patient_id, encounter_id, code, description, status, diagnosed_by, create_time, update_time"
PRESCRIPTION = (
    "id, patient_id, encounter_id, prescriber_id, drug, strength, dose, route, frequency, duration_days,"
    " status, create_time, update_time"
)
VITALS = "id, patient_id, encounter_id, recorded_by, measure_time, measurements, create_time"


# -- data keys ----------------------------------------------------------------------------------
async def data_key(conn: asyncpg.Connection, patient_id):
    return await conn.fetchrow("SELECT kek_id, wrapped_key FROM data_keys WHERE patient_id = $1", patient_id)


async def add_data_key(conn: asyncpg.Connection, patient_id, kek_id: str, wrapped: bytes):
    """The patient's data key: ours, or the one a concurrent first write stored before us."""
    await conn.execute(
        "INSERT INTO data_keys (patient_id, kek_id, wrapped_key) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        patient_id,
        kek_id,
        wrapped,
    )
    return await data_key(conn, patient_id)


async def keys_not_under(conn: asyncpg.Connection, kek_id: str, limit: int):
    """A batch of data keys wrapped by another KEK, locked; rows locked by others are skipped."""
    return await conn.fetch(
        "SELECT patient_id, kek_id, wrapped_key FROM data_keys WHERE kek_id <> $1"
        " ORDER BY patient_id LIMIT $2 FOR UPDATE SKIP LOCKED",
        kek_id,
        limit,
    )


async def rewrap(conn: asyncpg.Connection, patient_id, kek_id: str, wrapped: bytes) -> None:
    await conn.execute(
        "UPDATE data_keys SET kek_id = $2, wrapped_key = $3, rewrap_time = now() WHERE patient_id = $1",
        patient_id,
        kek_id,
        wrapped,
    )


async def count_keys_by_kek(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT kek_id, count(*) AS n FROM data_keys GROUP BY kek_id")
    return {r["kek_id"]: r["n"] for r in rows}


# -- reading ------------------------------------------------------------------------------------
async def latest_version(conn, patient_id):
    return await conn.fetchrow(
        "SELECT version, running_notes, allergies, author_id, create_time FROM chart_versions"
        " WHERE patient_id = $1 ORDER BY version DESC LIMIT 1",
        patient_id,
    )


async def versions(conn, patient_id, before: int | None, limit: int):
    return await conn.fetch(
        "SELECT version, running_notes, allergies, author_id, create_time FROM chart_versions"
        " WHERE patient_id = $1 AND ($2::int IS NULL OR version < $2) ORDER BY version DESC LIMIT $3",
        patient_id,
        before,
        limit,
    )


def _newest(table: str, columns: str, where: str = "") -> str:
    return (
        f"SELECT {columns} FROM {table} WHERE patient_id = $1{where}"
        " AND ($2::timestamptz IS NULL OR (create_time, id) < ($2, $3::uuid))"
        " ORDER BY create_time DESC, id DESC LIMIT $4"
    )


NEWEST = {
    "encounters": _newest("encounters", ENCOUNTER),
    "diagnoses": _newest("diagnoses", DIAGNOSIS),
    "active_diagnoses": _newest("diagnoses", DIAGNOSIS, " AND status = 'ACTIVE'"),
    "prescriptions": _newest("prescriptions", PRESCRIPTION),
    "vital_signs": _newest("vital_signs", VITALS),
    "notes": (
        f"SELECT {NOTE} FROM notes n JOIN note_revisions r ON r.note_id = n.id AND r.revision = n.revision"
        " WHERE n.patient_id = $1 AND ($2::timestamptz IS NULL OR (n.create_time, n.id) < ($2, $3::uuid))"
        " ORDER BY n.create_time DESC, n.id DESC LIMIT $4"
    ),
}


async def newest(conn, section: str, patient_id, after, limit: int):
    """Rows of a section, newest first, after a keyset position (create_time, id)."""
    return await conn.fetch(
        NEWEST[section], patient_id, after[0] if after else None, after[1] if after else None, limit
    )


def _names(columns: str) -> tuple[str, ...]:
    return tuple(c.split(" AS ")[-1].split(".")[-1].strip() for c in columns.split(","))


def _rows(columns: str, query: str) -> str:
    return f"array(SELECT row({columns.replace(' AS revision_id', '')}) {query})"


_LIMIT = " ORDER BY create_time DESC, id DESC LIMIT $2"
_VERSION = "version, running_notes, allergies, author_id, create_time"
# The whole chart in one round trip: the data key, the latest version, and each section (rows
# as anonymous records, newest first, `limit` of them) unless its flag says the caller may not see it.
CHART = f"""
SELECT
    (SELECT row(kek_id, wrapped_key) FROM data_keys WHERE patient_id = $1) AS data_key,
    (SELECT row({_VERSION}) FROM chart_versions WHERE patient_id = $1 ORDER BY version DESC LIMIT 1)
        AS version,
    CASE WHEN $3 THEN {_rows(ENCOUNTER, "FROM encounters WHERE patient_id = $1" + _LIMIT)} END
        AS encounters,
    CASE WHEN $4 THEN {
    _rows(
        NOTE,
        "FROM notes n JOIN note_revisions r ON r.note_id = n.id AND r.revision = n.revision"
        " WHERE n.patient_id = $1 ORDER BY n.create_time DESC, n.id DESC LIMIT $2",
    )
} END AS notes,
    CASE WHEN $5 THEN {
    _rows(DIAGNOSIS, "FROM diagnoses WHERE patient_id = $1 AND ($6 OR status = 'ACTIVE')" + _LIMIT)
} END AS diagnoses,
    CASE WHEN $7 THEN {_rows(PRESCRIPTION, "FROM prescriptions WHERE patient_id = $1" + _LIMIT)} END
        AS prescriptions,
    CASE WHEN $8 THEN {_rows(VITALS, "FROM vital_signs WHERE patient_id = $1" + _LIMIT)} END
        AS vital_signs
"""
CHART_NAMES = {
    "data_key": ("kek_id", "wrapped_key"),
    "version": _names(_VERSION),
    "encounters": _names(ENCOUNTER),
    "notes": _names(NOTE),
    "diagnoses": _names(DIAGNOSIS),
    "prescriptions": _names(PRESCRIPTION),
    "vital_signs": _names(VITALS),
}


async def whole_chart(conn, patient_id, limit: int, sections: set[str], *, all_diagnoses: bool) -> dict:
    """{part: row or list of rows (dicts)} of the chart; a section not in `sections` is []."""
    found = await conn.fetchrow(
        CHART,
        patient_id,
        limit,
        "encounters" in sections,
        "notes" in sections,
        "diagnoses" in sections,
        all_diagnoses,
        "prescriptions" in sections,
        "vital_signs" in sections,
    )
    chart: dict = {}
    for part, names in CHART_NAMES.items():
        value = found[part]
        if part in ("data_key", "version"):
            chart[part] = dict(zip(names, value, strict=True)) if value is not None else None
        else:
            chart[part] = [dict(zip(names, row, strict=True)) for row in value or ()]
    return chart


async def encounter(conn, patient_id, encounter_id):
    return await conn.fetchrow(
        f"SELECT {ENCOUNTER} FROM encounters WHERE id = $1 AND patient_id = $2", encounter_id, patient_id
    )


async def note(conn, patient_id, note_id, *, lock: bool = False):
    suffix = " FOR UPDATE OF n" if lock else ""
    return await conn.fetchrow(
        f"SELECT {NOTE} FROM notes n JOIN note_revisions r ON r.note_id = n.id AND r.revision = n.revision"
        f" WHERE n.id = $1 AND n.patient_id = $2{suffix}",
        note_id,
        patient_id,
    )


async def revisions(conn, note_id, before: int | None, limit: int):
    return await conn.fetch(
        f"SELECT {REVISION} FROM note_revisions WHERE note_id = $1 AND ($2::int IS NULL OR revision < $2)"
        " ORDER BY revision DESC LIMIT $3",
        note_id,
        before,
        limit,
    )


async def diagnosis(conn, patient_id, diagnosis_id, *, lock: bool = False):
    suffix = " FOR UPDATE" if lock else ""
    return await conn.fetchrow(
        f"SELECT {DIAGNOSIS} FROM diagnoses WHERE id = $1 AND patient_id = $2{suffix}",
        diagnosis_id,
        patient_id,
    )


async def prescription(conn, patient_id, prescription_id, *, lock: bool = False):
    suffix = " FOR UPDATE" if lock else ""
    return await conn.fetchrow(
        f"SELECT {PRESCRIPTION} FROM prescriptions WHERE id = $1 AND patient_id = $2{suffix}",
        prescription_id,
        patient_id,
    )


# -- writing ------------------------------------------------------------------------------------
async def lock_versions(conn, patient_id) -> None:
    """Serialise a patient's chart updates: the next version is sealed for its number, so two
    updates must not both read the same latest one (the data key's row is the chart's lock)."""
    await conn.execute("SELECT 1 FROM data_keys WHERE patient_id = $1 FOR UPDATE", patient_id)


async def add_version(conn, patient_id, version: int, running_notes: bytes, allergies: bytes, author_id, now):
    """Version `version` of the chart, exactly the number its ciphertexts are sealed for."""
    await conn.execute(
        "INSERT INTO chart_versions (patient_id, version, running_notes, allergies, author_id, create_time)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        patient_id,
        version,
        running_notes,
        allergies,
        author_id,
        now,
    )


async def add_encounter(conn, values: tuple):
    return await conn.fetchrow(
        f"INSERT INTO encounters ({ENCOUNTER}) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENCOUNTER}",
        *values,
    )


async def add_note(conn, note_id, patient_id, encounter_id, author_id, now) -> None:
    await conn.execute(
        "INSERT INTO notes (id, patient_id, encounter_id, author_id, revision, create_time, update_time)"
        " VALUES ($1, $2, $3, $4, 1, $5, $5)",
        note_id,
        patient_id,
        encounter_id,
        author_id,
        now,
    )


async def add_revision(conn, values: tuple) -> None:
    """(id, note_id, patient_id, revision, author_id, subjective, objective, assessment, plan, now)"""
    await conn.execute(
        "INSERT INTO note_revisions (id, note_id, patient_id, revision, author_id, subjective, objective,"
        " assessment, plan, create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        *values,
    )
    await conn.execute(
        "UPDATE notes SET revision = $2, update_time = $3 WHERE id = $1", values[1], values[3], values[9]
    )


async def add_diagnosis(conn, values: tuple):
    return await conn.fetchrow(
        f"INSERT INTO diagnoses ({DIAGNOSIS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
        f" RETURNING {DIAGNOSIS}",
        *values,
    )


async def update_diagnosis(conn, diagnosis_id, description: bytes | None, status: str, now):
    return await conn.fetchrow(
        "UPDATE diagnoses SET description = coalesce($2, description), status = $3, update_time = $4"
        f" WHERE id = $1 RETURNING {DIAGNOSIS}",
        diagnosis_id,
        description,
        status,
        now,
    )


async def add_prescription(conn, values: tuple):
    return await conn.fetchrow(
        f"INSERT INTO prescriptions ({PRESCRIPTION}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
        f" $12, $12) RETURNING {PRESCRIPTION}",
        *values,
    )


async def update_prescription(conn, prescription_id, status: str, now):
    return await conn.fetchrow(
        f"UPDATE prescriptions SET status = $2, update_time = $3 WHERE id = $1 RETURNING {PRESCRIPTION}",
        prescription_id,
        status,
        now,
    )


async def add_vitals(conn, values: tuple):
    return await conn.fetchrow(
        f"INSERT INTO vital_signs ({VITALS}) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {VITALS}", *values
    )
