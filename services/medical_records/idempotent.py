"""`request_id` on the chart's Create RPCs (AIP-155), through the kit's IdempotencyKeys: the key is
claimed in the transaction that does the work, after the access decision (a refused caller claims
nothing), and remembered with the answer in that same transaction. A retry gets the first answer
and writes nothing new; a key reused for a different request is INVALID_ARGUMENT (request_id)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from clinic_platform import idempotency
from clinic_platform.auth import Caller
from clinic_platform.idempotency import IdempotencyKeys
from medical_records import store


@dataclass(frozen=True)
class Once:
    """One Create call: its RPC, request, and how its answer is made from what it created."""

    keys: IdempotencyKeys
    rpc: str
    request: Message
    response_type: type[Message]
    answer: Callable[[Any], Message]

    def _scope(self, me: Caller) -> str:
        return idempotency.scope(self.rpc, me.user_id)

    async def earlier(self, tx: store.Tx, me: Caller) -> Message | None:
        """The first answer if this is a retry (None: go ahead and do the work)."""
        if not self.request.request_id:
            return None
        return await self.keys.claim(
            tx.session, self._scope(me), self.request.request_id, self.request, self.response_type
        )

    async def done(self, tx: store.Tx, me: Caller, created: Any) -> Message:
        """The answer for `created`, remembered for retries."""
        response = self.answer(created)
        if self.request.request_id:
            await self.keys.remember(tx.session, self._scope(me), self.request.request_id, response)
        return response
