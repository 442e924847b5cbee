"""The one stop-aware periodic loop every background job uses (reconciliation, key reloads, JWKS
refresh, retention, the outbox's age check): run, sleep until the next round or the stop signal,
and survive a failing round (the database may be down; the next round tries again)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def sleep_unless_stopped(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stopping` is set meanwhile."""
    if not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=seconds)


async def run_every(
    seconds: float | Callable[[], float],
    job: Callable[[], Awaitable[object]],
    stopping: asyncio.Event,
    *,
    failure: str,
    wait_first: bool = False,
    failure_level: int = logging.WARNING,
) -> None:
    """Call `job` every `seconds` (a number, or a function asked before each sleep) until
    `stopping` is set. A round that raises is logged as `failure` with the error and does not end
    the loop; `wait_first` sleeps before the first round (for a job whose work was done at start)."""
    interval = seconds if callable(seconds) else (lambda: seconds)
    if wait_first:
        await sleep_unless_stopped(stopping, interval())
    while not stopping.is_set():
        try:
            await job()
        except Exception as exc:
            log.log(failure_level, failure, extra={"error": repr(exc)})
        await sleep_unless_stopped(stopping, interval())
