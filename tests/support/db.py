"""Reading a service's database from a test (to assert what is stored, or wait for a projection)."""

from __future__ import annotations

import asyncio

import asyncpg


def fetch(url: str, query: str, *args) -> list[asyncpg.Record]:
    async def run():
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())
