"""Every service's Alembic history applies to an empty database and matches its models."""

from __future__ import annotations

import asyncio
import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from clinic_platform.migrations import upgrade_to_head
from local_stack.stack import SERVICES
from tests.support.kit import KitDatabase


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_create_exactly_the_tables_the_service_declares(stack, service):
    database = await KitDatabase(stack.postgres_admin_url, stack.ports.postgres).create_empty()
    try:
        await asyncio.to_thread(upgrade_to_head, service, database.url)
        await asyncio.to_thread(upgrade_to_head, service, database.url)  # applying twice is a no-op
        metadata = importlib.import_module(f"{service}.store").metadata
        engine = create_async_engine(database.url)
        async with engine.connect() as conn:
            differences = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                )
            )
        await engine.dispose()
        assert differences == []
    finally:
        await database.drop()
