"""A database of its own per test: empty (for migrations) or with the kit's tables plus a ledger
that the consumer tests' handlers write to."""

from __future__ import annotations

import secrets
import uuid

import asyncpg
from sqlalchemy import BigInteger, Column, Identity, MetaData, Table, Text, Uuid, text

from clinic_platform.db import Database, new_metadata


def kit_metadata() -> MetaData:
    metadata = new_metadata()
    Table(
        "ledger",
        metadata,
        Column("seq", BigInteger, Identity(), primary_key=True),  # the order effects were applied in
        Column("event_id", Uuid, nullable=False),
        Column("aggregate_id", Text, nullable=False),
        Column("note", Text, nullable=False),
    )
    return metadata


class KitDatabase:
    """Created fresh for one test, so no test sees another's outbox rows."""

    def __init__(self, admin_url: str, port: int) -> None:
        self.admin_url = admin_url
        self.name = f"kit_{uuid.uuid4().hex[:10]}"
        password = secrets.token_urlsafe(16)
        self._password = password
        self.url = f"postgresql+asyncpg://{self.name}:{password}@127.0.0.1:{port}/{self.name}"
        self.metadata = kit_metadata()
        self.db = Database(self.url, self.metadata)

    async def create_empty(self) -> KitDatabase:
        """Only the role and the database, for migrations to fill."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f"CREATE ROLE {self.name} LOGIN PASSWORD '{self._password}'")
            await conn.execute(f"CREATE DATABASE {self.name} OWNER {self.name}")
        finally:
            await conn.close()
        return self

    async def create(self) -> KitDatabase:
        await self.create_empty()
        async with self.db.engine.begin() as conn:
            await conn.run_sync(self.metadata.create_all)
        return self

    async def drop(self) -> None:
        await self.db.close()
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            await conn.execute(f"DROP ROLE IF EXISTS {self.name}")
        finally:
            await conn.close()

    async def scalar(self, sql: str, **params):
        async with self.db.engine.connect() as conn:
            return await conn.scalar(text(sql), params)
