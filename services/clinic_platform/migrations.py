"""Alembic, one migration history per service (`<service>/migrations/`), driven from code.

A service's `migrations/env.py` is two lines: import its metadata and call `run_env(metadata)`.
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
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(package: str, database_url: str) -> None:
    """Blocking; call it in a worker thread from async code."""
    command.upgrade(alembic_config(package, database_url), "head")


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
    service, revision = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "head")
    command.upgrade(alembic_config(service, os.environ["DATABASE_URL"]), revision)


def create_platform_tables() -> None:
    """Version 1 of the kit's tables (outbox, inbox, relay state), for a service's first migration.

    Frozen DDL rather than metadata.create_all, so later changes to the kit come as new migrations."""
    import sqlalchemy as sa
    from alembic import op

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("aggregate_id", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("request_id", sa.Text),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"])
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("consumer", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "outbox_relay_state",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("broker_cluster_id", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
