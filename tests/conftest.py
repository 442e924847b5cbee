"""Fixtures on real components: one stack per test session, on free ports in a temporary folder,
started by the same code as `./mesh up`, so a test run never touches a running local stack."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from local_stack.stack import Ports, Stack
from tests.support.kit import KitDatabase


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL, Redis and the broker (services and Envoy start on demand: see `mesh`)."""
    state = tmp_path_factory.mktemp("stack")
    env = {
        k: v for k, v in os.environ.items() if k not in ("POSTGRES_ADMIN_URL", "REDIS_URL", "KAFKA_BOOTSTRAP")
    }
    # Short key-rotation timings (Envoy refreshes its JWKS every 3 s, a new key signs 6 s after it
    # is published) and a login limit tests do not hit; the brute-force test makes a strict edge.
    edge_options = {"jwks_cache_seconds": 3, "login_burst": 1000, "login_per_minute": 6000}
    test_stack = Stack(state, Ports.free(), env=env, edge_options=edge_options)
    test_stack.service_env_extra = {
        "KEY_PUBLISH_DELAY_SECONDS": "6",
        "JWKS_REFRESH_SECONDS": "1",
        # A provider answer later than 1.5 s counts as a timeout; pending payments settle after 1 s.
        "PAYMENT_PROVIDER_TIMEOUT_SECONDS": "1.5",
        "RECONCILE_EVERY_SECONDS": "1",
        "RECONCILE_AFTER_SECONDS": "1",
        # Deliveries retry after 0.5 s, 1 s, 2 s, ... (a stopped mail server is back within seconds).
        "NOTIFICATION_RETRY_BASE_SECONDS": "0.5",
    }
    try:
        test_stack.start_infrastructure()
        yield test_stack
    finally:
        test_stack.down()


@pytest.fixture(scope="session")
def mesh(stack: Stack) -> Stack:
    """All seven services and the Envoy edge, running as processes like the local stack."""
    stack.start_services(list(stack.ports.services))
    stack.start_gateway()
    return stack


@pytest.fixture
async def kit_db(stack: Stack) -> AsyncIterator[KitDatabase]:
    """A fresh database with the kit's tables and a ledger table for consumer effects."""
    db = await KitDatabase(stack.postgres_admin_url, stack.ports.postgres).create()
    yield db
    await db.drop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that need no infrastructure run first, so a broken unit fails fast.
    items.sort(key=lambda item: 0 if "/unit/" in str(item.fspath) else 1)
