"""Queries about who may see a chart: projections of users and appointments, access requests and
grants."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

# One round trip: is the patient known, and what ties the caller to them.
RELATIONSHIP = """
SELECT
    EXISTS (SELECT 1 FROM users WHERE id = $1 AND role = 'PATIENT') AS patient_known,
    EXISTS (SELECT 1 FROM care_appointments
            WHERE patient_id = $1 AND doctor_id = $2 AND status <> 'CANCELLED' AND end_time >= $4)
        AS care_relationship,
    EXISTS (SELECT 1 FROM care_appointments
            WHERE patient_id = $1 AND status <> 'CANCELLED' AND start_time < $6 AND end_time > $5)
        AS appointment_today,
    g.id AS grant_id, g.kind AS grant_kind
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT id, kind FROM access_grants
    WHERE patient_id = $1 AND grantee_id = $2 AND revoke_time IS NULL
      AND (expire_time IS NULL OR expire_time > $3)
    ORDER BY (kind = 'EMERGENCY') DESC, create_time DESC LIMIT 1
) AS g ON true
"""


async def relationship(
    conn: asyncpg.Connection,
    patient_id: uuid.UUID,
    caller_id: uuid.UUID,
    now: datetime,
    care_since: datetime,
    day_start: datetime,
    day_end: datetime,
):
    return await conn.fetchrow(RELATIONSHIP, patient_id, caller_id, now, care_since, day_start, day_end)


async def care_appointment(conn: asyncpg.Connection, appointment_id: uuid.UUID):
    return await conn.fetchrow(
        "SELECT patient_id, doctor_id, status FROM care_appointments WHERE id = $1", appointment_id
    )


async def user_role(conn: asyncpg.Connection, user_id: uuid.UUID) -> str | None:
    return await conn.fetchval("SELECT role FROM users WHERE id = $1 AND active", user_id)


# -- projections --------------------------------------------------------------------------------
async def upsert_user(conn: asyncpg.Connection, user_id: uuid.UUID, role: str, active: bool, version: int):
    await conn.execute(
        "INSERT INTO users (id, role, active, user_version) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (id) DO UPDATE SET role = EXCLUDED.role, active = EXCLUDED.active,"
        " user_version = EXCLUDED.user_version WHERE users.user_version < EXCLUDED.user_version",
        user_id,
        role,
        active,
        version,
    )


async def deactivate_user(conn: asyncpg.Connection, user_id: uuid.UUID, version: int) -> None:
    await conn.execute(
        "UPDATE users SET active = false, user_version = $2 WHERE id = $1 AND user_version < $2",
        user_id,
        version,
    )


async def upsert_appointment(conn: asyncpg.Connection, values: tuple) -> None:
    """(id, patient_id, doctor_id, start_time, end_time, status, version); older versions lose."""
    await conn.execute(
        "INSERT INTO care_appointments (id, patient_id, doctor_id, start_time, end_time, status, version)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET"
        " start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time, status = EXCLUDED.status,"
        " version = EXCLUDED.version WHERE care_appointments.version < EXCLUDED.version",
        *values,
    )


# -- requests and grants ------------------------------------------------------------------------
REQUEST_COLUMNS = "id, patient_id, requester_id, reason, status, access_grant_id, create_time, decide_time"
GRANT_COLUMNS = (
    "id, patient_id, grantee_id, kind, access_request_id, justification, expire_time, revoke_time,"
    " create_time"
)


async def insert_request(conn, request_id: uuid.UUID, patient_id, requester_id, reason: str, now: datetime):
    return await conn.fetchrow(
        "INSERT INTO access_requests (id, patient_id, requester_id, reason, status, create_time)"
        f" VALUES ($1, $2, $3, $4, 'PENDING', $5) ON CONFLICT DO NOTHING RETURNING {REQUEST_COLUMNS}",
        request_id,
        patient_id,
        requester_id,
        reason,
        now,
    )


async def request(conn, patient_id, request_id, *, lock: bool = False):
    suffix = " FOR UPDATE" if lock else ""
    return await conn.fetchrow(
        f"SELECT {REQUEST_COLUMNS} FROM access_requests WHERE id = $1 AND patient_id = $2{suffix}",
        request_id,
        patient_id,
    )


async def decide_request(conn, request_id, status: str, grant_id, now: datetime):
    return await conn.fetchrow(
        "UPDATE access_requests SET status = $2, access_grant_id = $3, decide_time = $4 WHERE id = $1"
        f" RETURNING {REQUEST_COLUMNS}",
        request_id,
        status,
        grant_id,
        now,
    )


async def list_requests(conn, patient_id, requester_id, status: str | None, after, limit: int):
    return await conn.fetch(
        f"SELECT {REQUEST_COLUMNS} FROM access_requests WHERE patient_id = $1"
        " AND ($2::uuid IS NULL OR requester_id = $2) AND ($3::text IS NULL OR status = $3)"
        " AND ($4::timestamptz IS NULL OR (create_time, id) < ($4, $5::uuid))"
        " ORDER BY create_time DESC, id DESC LIMIT $6",
        patient_id,
        requester_id,
        status,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )


async def insert_grant(conn, values: tuple):
    """(id, patient_id, grantee_id, kind, access_request_id, justification, expire_time, create_time)"""
    return await conn.fetchrow(
        "INSERT INTO access_grants (id, patient_id, grantee_id, kind, access_request_id, justification,"
        f" expire_time, create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {GRANT_COLUMNS}",
        *values,
    )


async def active_grant(conn, patient_id, grantee_id, now: datetime, kind: str = "PATIENT"):
    return await conn.fetchrow(
        f"SELECT {GRANT_COLUMNS} FROM access_grants WHERE patient_id = $1 AND grantee_id = $2"
        " AND kind = $4 AND revoke_time IS NULL AND (expire_time IS NULL OR expire_time > $3) LIMIT 1",
        patient_id,
        grantee_id,
        now,
        kind,
    )


async def grant(conn, patient_id, grant_id, *, lock: bool = False):
    suffix = " FOR UPDATE" if lock else ""
    return await conn.fetchrow(
        f"SELECT {GRANT_COLUMNS} FROM access_grants WHERE id = $1 AND patient_id = $2{suffix}",
        grant_id,
        patient_id,
    )


async def revoke_grant(conn, grant_id, revoked_by, now: datetime):
    return await conn.fetchrow(
        "UPDATE access_grants SET revoke_time = $3, revoked_by = $2 WHERE id = $1 AND revoke_time IS NULL"
        f" RETURNING {GRANT_COLUMNS}",
        grant_id,
        revoked_by,
        now,
    )


async def list_grants(conn, patient_id, grantee_id, after, limit: int):
    return await conn.fetch(
        f"SELECT {GRANT_COLUMNS} FROM access_grants WHERE patient_id = $1"
        " AND ($2::uuid IS NULL OR grantee_id = $2)"
        " AND ($3::timestamptz IS NULL OR (create_time, id) < ($3, $4::uuid))"
        " ORDER BY create_time DESC, id DESC LIMIT $5",
        patient_id,
        grantee_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
