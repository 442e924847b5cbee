"""A consumer in a process of its own that dies the moment before it would commit its offsets,
i.e. after the effect of the events it read is committed (the kill test of the consumer).

    python -m tests.support.run_consumer DATABASE_URL BOOTSTRAP GROUP TOPIC"""

from __future__ import annotations

import asyncio
import os
import sys

from clinic.appointments.v1 import events_pb2
from clinic_platform.consumer import EventConsumer
from clinic_platform.db import Database
from tests.support.events import ledger_handler
from tests.support.kit import kit_metadata

CRASHED_BEFORE_COMMIT = 3


class CrashBeforeCommit(EventConsumer):
    async def _commit(self, offsets) -> None:
        os._exit(CRASHED_BEFORE_COMMIT)  # like a kill -9 between the effect and the offset commit


async def main(url: str, bootstrap: str, group: str, topic: str) -> None:
    db = Database(url, kit_metadata())
    consumer = CrashBeforeCommit(
        db,
        bootstrap=bootstrap,
        group=group,
        topics=[topic],
        handlers={events_pb2.AppointmentBooked: ledger_handler(db.metadata)},
    )
    await consumer.run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
