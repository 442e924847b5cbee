"""Services other than user_management verify tokens with its public keys (JWKS), fetched over
gRPC: refreshed periodically, and at once when a token names a key not seen yet."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.json_format import MessageToDict

from clinic.user_management.v1 import user_management_service_pb2 as pb
from clinic.user_management.v1 import user_management_service_pb2_grpc as rpc
from clinic_platform.auth import public_key_from_jwk
from clinic_platform.clients import channel
from clinic_platform.periodic import run_every

log = logging.getLogger(__name__)


class RemoteJwks:
    """Public keys from user_management's JWKS: refreshed periodically, and at once (at most every
    `min_refetch_seconds`) when a token names a key we have not seen, e.g. right after rotation."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[list[dict[str, Any]]]],
        *,
        refresh_seconds: float = 30.0,
        min_refetch_seconds: float = 1.0,
    ) -> None:
        self.fetch = fetch
        self.refresh_seconds = refresh_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def public_key(self, kid: str) -> Any | None:
        key = self._keys.get(kid)
        if key is None and (
            not self._keys or time.monotonic() - self._fetched_at >= self.min_refetch_seconds
        ):
            await self.refresh()
            key = self._keys.get(kid)
        return key

    async def refresh(self) -> None:
        async with self._lock:
            if self._keys and time.monotonic() - self._fetched_at < self.min_refetch_seconds:
                return
            try:
                jwks = await self.fetch()
            except Exception as exc:  # keep the keys we have; calls with known keys still work
                log.warning("could not fetch the JWKS", extra={"error": repr(exc)})
                self._fetched_at = time.monotonic()
                return
            self._keys = {jwk["kid"]: public_key_from_jwk(jwk) for jwk in jwks}
            self._fetched_at = time.monotonic()

    async def run(self, stopping: asyncio.Event) -> None:
        """Background refresh, so a rotated key is known before the first token signed with it."""
        await run_every(self._next_refresh_seconds, self.refresh, stopping, failure="JWKS refresh failed")

    def _next_refresh_seconds(self) -> float:
        return self.refresh_seconds if self._keys else self.min_refetch_seconds  # none yet: keep trying


async def fetch_jwks(address: str) -> list[dict[str, Any]]:
    """user_management's public keys over gRPC (GetJwks is open: no token needed)."""
    async with channel(address) as ch:
        reply = await rpc.UserManagementServiceStub(ch).GetJwks(pb.GetJwksRequest(), timeout=5)
    return [MessageToDict(key, preserving_proto_field_name=True) for key in reply.keys]
