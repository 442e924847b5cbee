"""Alembic, one migration history per service (`<service>/migrations/`), driven from code.

A service's `migrations/env.py` is two lines: import its metadata and call `run_env(metadata)`.
Its history starts from the kit's own revisions (`clinic_platform/kit_migrations`: outbox, inbox,
relay state), so a service's first migration names `down_revision = "kit_0001"`.
Migrations run at service start under a Postgres advisory lock, so replicas starting together
take turns; `python -m clinic_platform.migrations <service> [revision]` runs them by hand.
"""

from __future__ import annotations

import asyncio
import os
import sys
import zlib

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATION_LOCK_KEY = zlib.crc32(b"clinic.migrations")


def alembic_config(package: str, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", f"{package}:migrations")
    config.set_main_option("path_separator", "space")
    config.set_main_option(
        "version_locations", f"clinic_platform:kit_migrations {package}:migrations/versions"
    )
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(package: str, database_url: str) -> None:
    """Blocking; call it in a worker thread from async code."""
    # "heads": the kit's own revisions after kit_0002 are a branch beside the service's history.
    command.upgrade(alembic_config(package, database_url), "heads")


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's migrations/env.py."""
    url = context.config.attributes.get("database_url") or os.environ["DATABASE_URL"]
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url, target_metadata))


async def _run_online(url: str, target_metadata: MetaData) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await connection.commit()
            try:
                await connection.run_sync(_migrate, target_metadata)
                await connection.commit()
            finally:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                await connection.commit()
    finally:
        await engine.dispose()


def _migrate(connection, target_metadata: MetaData) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if __name__ == "__main__":
    service, revision = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "heads")
    command.upgrade(alembic_config(service, os.environ["DATABASE_URL"]), revision)
