"""`request_id` on the chart's Create RPCs and on access requests and grants (AIP-155), through the
kit's IdempotencyKeys: the key is claimed in the transaction that does the work, after the access
decision (a refused caller claims nothing), and remembered with the answer in that same
transaction. A retry gets the first answer and writes nothing new; a key reused for a different
request is INVALID_ARGUMENT (request_id).

The kit's table is shared and plain, so what records keeps there is not: the stored answer (a
note, a diagnosis, a reason) is sealed with the patient's data key like any chart field, and the
request's fingerprint is an HMAC under a key derived from it, so neither the answer nor a
guessable request (a diagnosis code among 74,000) can be read from the table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import BytesValue

from clinic_platform import idempotency
from clinic_platform.auth import Caller
from clinic_platform.idempotency import IdempotencyKeys
from medical_records import sealed_rows, store
from medical_records.crypto import DataKeyCache, FieldCipher

TABLE = "idempotency_keys"


@dataclass(frozen=True)
class Retries:
    """The kit's keys and the patients' data keys, for every Create that takes a request_id."""

    keys: IdempotencyKeys
    ciphers: DataKeyCache


@dataclass(frozen=True)
class Once:
    """One Create call: its RPC, request (with `patient_id`), and how its answer is made from what
    it created."""

    retries: Retries
    rpc: str
    request: Message
    response_type: type[Message]
    answer: Callable[[Any], Message]

    def _scope(self, me: Caller) -> str:
        return idempotency.scope(self.rpc, me.user_id)

    async def _cipher(self, tx: store.Tx) -> FieldCipher:
        cipher = await sealed_rows.cipher(tx, self.retries.ciphers, self.request.patient_id, create=True)
        assert cipher is not None
        return cipher

    async def earlier(self, tx: store.Tx, me: Caller) -> Message | None:
        """The first answer if this is a retry (None: go ahead and do the work)."""
        if not self.request.request_id:
            return None
        cipher = await self._cipher(tx)
        scope = self._scope(me)
        sealed = await self.retries.keys.claim(
            tx.session,
            scope,
            self.request.request_id,
            self.request,
            BytesValue,
            fingerprint_key=cipher.fingerprint_key,
        )
        if sealed is None:
            return None
        row_id = f"{scope}/{self.request.request_id}"
        return self.response_type.FromString(cipher.open_bytes(TABLE, row_id, "response", sealed.value))

    async def done(self, tx: store.Tx, me: Caller, created: Any) -> Message:
        """The answer for `created`, remembered (sealed) for retries."""
        response = self.answer(created)
        if self.request.request_id:
            cipher = await self._cipher(tx)
            scope = self._scope(me)
            row_id = f"{scope}/{self.request.request_id}"
            sealed = cipher.seal_bytes(TABLE, row_id, "response", response.SerializeToString())
            answer = BytesValue(value=sealed)
            await self.retries.keys.remember(tx.session, scope, self.request.request_id, answer)
        return response
