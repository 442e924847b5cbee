"""Waiting for asynchronous effects: poll with a deadline, never sleep a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time


async def eventually(predicate, *, within: float = 20.0, what: str = "condition"):
    """Poll `predicate` (sync or async) until it returns something truthy, or fail after `within` s."""
    deadline = time.monotonic() + within
    delay = 0.01
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def until(predicate, *, within: float = 20.0, what: str = "condition"):
    """The same for synchronous tests."""
    deadline = time.monotonic() + within
    delay = 0.01
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
