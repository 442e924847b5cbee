"""An outbox relay in a process of its own, for the test that kills one mid-batch.

python -m tests.support.run_relay DATABASE_URL BOOTSTRAP BATCH_SIZE"""

from __future__ import annotations

import asyncio
import sys

from clinic_platform.outbox import OutboxRelay
from tests.support.kit import kit_metadata


async def main(url: str, bootstrap: str, batch_size: int) -> None:
    from clinic_platform.db import Database

    db = Database(url, kit_metadata())
    relay = OutboxRelay(db, bootstrap=bootstrap, service="kittest", batch_size=batch_size)
    await relay.run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
