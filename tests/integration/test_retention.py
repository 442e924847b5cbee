"""Retention on real PostgreSQL: old published outbox rows, processed inbox rows and idempotency
keys are pruned in small batches; what is recent or still to be published stays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from clinic_platform.retention import Retention
from clinic_platform.settings import ServiceSettings

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
OLD, RECENT = NOW - timedelta(days=30), NOW - timedelta(hours=1)


async def insert_rows(kit_db) -> None:
    async with kit_db.db.engine.begin() as conn:
        for n, (occurred, published) in enumerate(
            [(OLD, OLD)] * 5 + [(RECENT, RECENT), (OLD, None)]  # the last one never got out
        ):
            await conn.execute(
                text(
                    "INSERT INTO outbox (event_id, topic, event_type, aggregate_id, payload,"
                    " occurred_at, published_at) VALUES (:id, 't', 'T', :n, '', :o, :p)"
                ),
                {"id": uuid.uuid4(), "n": str(n), "o": occurred, "p": published},
            )
        for received in [OLD] * 5 + [RECENT]:
            await conn.execute(
                text(
                    "INSERT INTO inbox (event_id, consumer, event_type, received_at)"
                    " VALUES (:id, 'c', 'T', :r)"
                ),
                {"id": uuid.uuid4(), "r": received},
            )
        for created in [OLD, RECENT]:
            await conn.execute(
                text(
                    "INSERT INTO idempotency_keys (scope, request_id, fingerprint, created_at)"
                    " VALUES ('s', :r, 'f', :c)"
                ),
                {"r": str(uuid.uuid4()), "c": created},
            )


async def test_old_kit_rows_are_pruned_in_batches_and_recent_or_unsent_ones_stay(kit_db):
    await insert_rows(kit_db)
    retention = Retention(kit_db.db, every=timedelta(hours=1), batch_size=2)  # several rounds each
    retention.add_kit_rules(
        outbox=timedelta(days=7), inbox=timedelta(days=14), idempotency_keys=timedelta(days=7)
    )

    assert await retention.prune_once(NOW) == {"outbox": 5, "inbox": 5, "idempotency_keys": 1}

    assert await kit_db.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
    assert await kit_db.scalar("SELECT count(*) FROM outbox WHERE published_at = :t", t=RECENT) == 1
    assert await kit_db.scalar("SELECT count(*) FROM inbox") == 1
    assert await kit_db.scalar("SELECT count(*) FROM idempotency_keys") == 1
    assert await retention.prune_once(NOW) == {"outbox": 0, "inbox": 0, "idempotency_keys": 0}


class Settings(ServiceSettings):
    service_name = "payment"


def test_an_inbox_kept_no_longer_than_the_replay_window_is_refused():
    with pytest.raises(ValueError, match="RETENTION_INBOX_HOURS must exceed OUTBOX_REPLAY_WINDOW_HOURS"):
        Settings(retention_inbox_hours=24, outbox_replay_window_hours=48)
