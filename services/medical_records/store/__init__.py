"""Every table and query of the medical records service (SQL on the transaction's asyncpg
connection; the schema is `migrations/versions/0001_records.py`, declared in tables.py).

    async with store.transaction(db) as tx:      # tx.session for the kit (outbox, idempotency)
        row = await chart.encounter(tx.conn, encounter_id)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from clinic_platform.db import Database, raw_connection
from medical_records.store.tables import metadata as metadata  # the kit's tables and ours


@dataclass
class Tx:
    session: AsyncSession | None  # None on a plain connection (no kit writes there)
    conn: asyncpg.Connection


@asynccontextmanager
async def transaction(db: Database) -> AsyncIterator[Tx]:
    async with db.transaction() as session:
        yield Tx(session, await raw_connection(session))


@asynccontextmanager
async def connection(db: Database) -> AsyncIterator[Tx]:
    """A pooled connection outside any transaction, for reads: under READ COMMITTED a transaction
    would not make a read's statements see one snapshot anyway, and BEGIN and COMMIT are two round
    trips of a chart read's four."""
    pool = await db.pool()
    async with pool.acquire() as conn:
        yield Tx(None, conn)


def is_unique_violation(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.UniqueViolationError) or isinstance(
        getattr(exc, "orig", None), asyncpg.UniqueViolationError
    )


Record = Any  # an asyncpg.Record


async def connect(database_url: str) -> asyncpg.Connection:
    """A connection of its own, for the commands (verify, KEK rotation)."""
    return await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
