"""A database for testing the kit itself: its tables plus a ledger that handlers write to."""

from __future__ import annotations

import secrets

import asyncpg
from sqlalchemy import Column, MetaData, Table, Text, Uuid

from clinic_platform.db import Database, new_metadata


def kit_metadata() -> MetaData:
    metadata = new_metadata()
    Table(
        "ledger",
        metadata,
        Column("event_id", Uuid, nullable=False),
        Column("aggregate_id", Text, nullable=False),
        Column("note", Text, nullable=False),
    )
    return metadata


class KitDatabase:
    def __init__(self, admin_url: str, port: int, name: str) -> None:
        self.admin_url = admin_url
        self.port = port
        self.name = name
        self.password = secrets.token_urlsafe(16)
        self.metadata = kit_metadata()
        self.url = ""
        self.db: Database | None = None

    async def create(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {self.name}")
            await conn.execute(f"DROP ROLE IF EXISTS {self.name}")
            await conn.execute(f"CREATE ROLE {self.name} LOGIN PASSWORD '{self.password}'")
            await conn.execute(f"CREATE DATABASE {self.name} OWNER {self.name}")
        finally:
            await conn.close()
        self.url = f"postgresql+asyncpg://{self.name}:{self.password}@127.0.0.1:{self.port}/{self.name}"
        self.db = Database(self.url, self.metadata)
        async with self.db.engine.begin() as conn:
            await conn.run_sync(self.metadata.create_all)

    async def close(self) -> None:
        if self.db:
            await self.db.close()

    async def scalar(self, sql: str, **params):
        from sqlalchemy import text

        async with self.db.engine.connect() as conn:
            return await conn.scalar(text(sql), params)
