"""The access log's SQL: one-statement appends that extend the hash chain under the chain head's
row lock (so concurrent writers take turns and cannot fork the chain), pages for the API, and the
ordered scan the verify command reads."""

from __future__ import annotations

import asyncpg

COLUMNS = (
    "sequence, id, patient_id, actor_id, actor_role, action, basis, access_grant_id, method, outcome,"
    " reason, request_id, emergency, create_time"
)

# $1..$13 the entry, $14 its canonical payload (audit.payload): hash = sha256(previous hash ||
# the sequence as 8 bytes big-endian || payload), as audit.chain_hash computes it.
APPEND = """
WITH head AS (
    SELECT sequence, hash FROM access_log_head WHERE id = 1 FOR UPDATE
), entry AS (
    SELECT sequence + 1 AS sequence, hash AS previous_hash,
           sha256(hash || int8send(sequence + 1) || $14::bytea) AS hash
    FROM head
), added AS (
    INSERT INTO access_log (sequence, id, patient_id, actor_id, actor_role, action, basis, access_grant_id,
                            method, outcome, reason, request_id, emergency, create_time, previous_hash, hash)
    SELECT entry.sequence, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
           entry.previous_hash, entry.hash
    FROM entry
    RETURNING sequence, hash
), moved AS (
    UPDATE access_log_head SET sequence = added.sequence, hash = added.hash FROM added WHERE id = 1
)
SELECT sequence FROM added
"""


async def append(conn: asyncpg.Connection, values: tuple, payload: bytes) -> int:
    return await conn.fetchval(APPEND, *values, payload)


async def page(conn: asyncpg.Connection, patient_id, actor_id, before: int | None, limit: int):
    return await conn.fetch(
        f"SELECT {COLUMNS} FROM access_log WHERE ($1::uuid IS NULL OR patient_id = $1)"
        " AND ($2::uuid IS NULL OR actor_id = $2) AND ($3::bigint IS NULL OR sequence < $3)"
        " ORDER BY sequence DESC LIMIT $4",
        patient_id,
        actor_id,
        before,
        limit,
    )


async def scan(conn: asyncpg.Connection, after: int, limit: int):
    return await conn.fetch(
        f"SELECT {COLUMNS}, previous_hash, hash FROM access_log WHERE sequence > $1"
        " ORDER BY sequence LIMIT $2",
        after,
        limit,
    )


async def head(conn: asyncpg.Connection):
    return await conn.fetchrow("SELECT sequence, hash FROM access_log_head WHERE id = 1")
