"""A background loop's doorbell: rung after a commit that gave the loop work, waited on with a
timeout (so a missed ring costs at most one poll) and a stop signal."""

from __future__ import annotations

import asyncio


class Wakeup:
    def __init__(self) -> None:
        self._rung = asyncio.Event()

    def ring(self) -> None:
        self._rung.set()

    def clear(self) -> None:
        self._rung.clear()

    async def wait(self, stopping: asyncio.Event, at_most: float) -> bool:
        """Until rung, stopped or `at_most` seconds; True when rung (and not stopping). The ring
        stays set until `clear()`, so the caller decides which rings its next round absorbs."""
        waiters = [asyncio.ensure_future(self._rung.wait()), asyncio.ensure_future(stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=at_most, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._rung.is_set() and not stopping.is_set()
