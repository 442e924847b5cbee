"""The local stack's own promises: data survives a stop and a start, stopping leaves no process
behind, and a part that fails to start is named together with its log."""

from __future__ import annotations

import asyncio
import os
import re

import asyncpg
import httpx
import pytest
import redis

from local_stack.components import ServiceProcess
from local_stack.processes import StartupError, is_alive
from local_stack.stack import Ports, Stack, free_port


def test_data_survives_a_stop_and_a_start_and_stopping_leaves_no_process(tmp_path):
    """The whole mesh up, then down: no process of it is left; its data is there on the next start."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("POSTGRES_ADMIN_URL", "REDIS_URL", "KAFKA_BOOTSTRAP")
    }
    stack = Stack(tmp_path / "state", Ports.free(), env=env)
    try:
        stack.up()  # what ./mesh up does: infrastructure, the seven services, Envoy
        assert httpx.get(f"{stack.edge_url}/healthz", timeout=5).status_code == 200
        url = stack.database_urls["payment"].replace("+asyncpg", "")
        asyncio.run(_execute(url, "CREATE TABLE kept (note text)", "INSERT INTO kept VALUES ('still here')"))
        redis.Redis.from_url(stack.redis_url).set("kept", "still here")
        running = {part: pid for part, pid in stack.status().items() if pid}
        infrastructure = {
            "postgres",
            "redis",
            "broker",
            "payments-simulator",
            "mailbox",
            "messaging-simulator",
        }
        assert set(running) == infrastructure | set(stack.ports.services) | {"envoy"}
        pids = list(running.values())

        stack.down()
        assert not any(is_alive(pid) for pid in pids)

        stack.start_infrastructure()
        assert asyncio.run(_fetch(url, "SELECT note FROM kept")) == "still here"
        assert redis.Redis.from_url(stack.redis_url).get("kept") == b"still here"
    finally:
        stack.down()


def test_a_service_that_cannot_start_is_named_with_its_log(stack):
    env = stack.service_env("insurance")
    env["DATABASE_URL"] = re.sub(r":[^:@/]+@", ":wrong-password@", env["DATABASE_URL"])
    broken = ServiceProcess(stack.state_dir, "insurance", free_port(), env, name="insurance-broken")
    with pytest.raises(StartupError) as err:
        broken.start()
    message = str(err.value)
    assert message.startswith("insurance-broken exited during start-up")
    assert str(broken.log) in message
    assert "password authentication failed" in message  # the last lines of the log come along


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _fetch(url: str, query: str):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


def test_a_step_that_fails_outside_a_process_is_named_too(tmp_path):
    stack = Stack(tmp_path / "state", Ports.free(), env={})

    def unreachable():
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(StartupError, match=r"^topics failed: ConnectionRefusedError: connection refused"):
        stack._step("topics", unreachable)
