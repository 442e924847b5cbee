"""`request_id` idempotency (AIP-155): a retried Create returns the first answer.

Inside the business transaction, `claim()` first inserts the key; a concurrent retry blocks on it
until the first transaction ends, then sees the stored answer. If the first transaction rolled
back, the retry simply runs again. A key reused for a different request is INVALID_ARGUMENT.

    async with db.transaction() as session:
        if (earlier := await keys.claim(session, scope, request.request_id, request, Response)):
            return earlier
        ... do the work ...
        await keys.remember(session, scope, request.request_id, response)

A write done in one SQL statement (asyncpg, for speed) inserts the key in that statement with the
answer it will give, from `keys.values(...)` and `COLUMNS`, `ON CONFLICT DO NOTHING`; when nothing
was written, `keys.earlier(...)` gives the first answer (or the error for a reused key).

The scope is the RPC and the caller (`scope(...)`), so one client's key never meets another's.
Fingerprints leave out `secret_fields` (passwords), so no secret is stored, not even hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.schema import MetaData

from clinic_platform.errors import InvalidArgument

R = TypeVar("R", bound=Message)

COLUMNS = "scope, request_id, fingerprint, response"


def scope(rpc: str, caller_id: str) -> str:
    return f"{rpc}:{caller_id}"


def checked(request_id: str) -> str:
    try:
        uuid.UUID(request_id)
    except ValueError:
        raise InvalidArgument("request_id", "must be a UUID chosen by the client") from None
    return request_id


def fingerprint(request: Message, secret_fields: tuple[str, ...] = (), key: bytes | None = None) -> str:
    """The request without its request_id (and secrets), hashed; with `key`, an HMAC, for requests
    whose few possible values a plain hash would give away (a diagnosis code)."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in ("request_id", *secret_fields):
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    data = copy.SerializeToString(deterministic=True)
    if key is not None:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


class IdempotencyKeys:
    def __init__(self, metadata: MetaData) -> None:
        self.table = metadata.tables["idempotency_keys"]

    async def claim(
        self,
        session: AsyncSession,
        scope: str,
        request_id: str,
        request: Message,
        response_type: type[R],
        *,
        secret_fields: tuple[str, ...] = (),
        what: str = "request",
        fingerprint_key: bytes | None = None,
    ) -> R | None:
        """None when this request is new (go ahead); the earlier response when it is a retry.
        `what` names the request in the error for a reused key ("... for a different booking")."""
        checked(request_id)
        request_print = fingerprint(request, secret_fields, fingerprint_key)
        claimed = await session.execute(
            insert(self.table)
            .values(scope=scope, request_id=request_id, fingerprint=request_print)
            .on_conflict_do_nothing()
            .returning(self.table.c.request_id)
        )
        if claimed.first() is not None:
            return None
        earlier = (
            await session.execute(
                select(self.table.c.fingerprint, self.table.c.response).where(
                    self.table.c.scope == scope, self.table.c.request_id == request_id
                )
            )
        ).one()
        return _answer(earlier._mapping, request_print, response_type, what)

    async def remember(self, session: AsyncSession, scope: str, request_id: str, response: Message) -> None:
        await session.execute(
            update(self.table)
            .where(self.table.c.scope == scope, self.table.c.request_id == request_id)
            .values(response=response.SerializeToString())
        )

    def values(
        self,
        scope: str,
        request_id: str,
        request: Message,
        response: Message,
        *,
        secret_fields: tuple[str, ...] = (),
    ) -> tuple[str, str, str, bytes]:
        """The row for `COLUMNS`, for a statement that claims the key and writes the answer at once."""
        return (scope, checked(request_id), fingerprint(request, secret_fields), response.SerializeToString())

    async def earlier(
        self,
        connection: Any,
        scope: str,
        request_id: str,
        request: Message,
        response_type: type[R],
        *,
        secret_fields: tuple[str, ...] = (),
        what: str = "request",
    ) -> R | None:
        """The first answer to a key a one-statement write found taken (asyncpg pool or connection);
        None when the key is gone (pruned meanwhile)."""
        row = await connection.fetchrow(
            "SELECT fingerprint, response FROM idempotency_keys WHERE scope = $1 AND request_id = $2",
            scope,
            request_id,
        )
        if row is None:
            return None
        return _answer(row, fingerprint(request, secret_fields), response_type, what)


def _answer(earlier: Any, request_print: str, response_type: type[R], what: str) -> R:
    if earlier["fingerprint"] != request_print:
        raise InvalidArgument("request_id", f"was already used for a different {what}")
    return response_type.FromString(earlier["response"])
