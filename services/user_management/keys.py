"""Signing keys: Ed25519 key pairs kept in the database, private halves sealed with AES-256-GCM
under a key-encryption key from the environment (never stored beside them).

Rotation publishes a new key at once but signs with it only from `signing_start_time`, after
every JWKS cache (Envoy, services) has had time to fetch it; the previous key stays published
until the last access token it signed has expired. So no valid token is rejected during rotation.
Every replica reloads the keys from the database every few seconds, so they agree on the signer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from clinic_platform.db import Database
from clinic_platform.errors import FailedPrecondition
from clinic_platform.periodic import run_every
from user_management import store


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_kek(value: str) -> bytes:
    """The key-encryption key: 32 bytes, base64 (url-safe or standard) in the environment."""
    padded = value.strip() + "=" * (-len(value.strip()) % 4)
    raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    if len(raw) != 32:
        raise ValueError("SIGNING_KEY_ENCRYPTION_KEY must be 32 bytes, base64-encoded")
    return raw


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    jwk: dict[str, str]
    signing_start: datetime

    @property
    def public_key(self):
        return self.private_key.public_key()


class KeyRing:
    def __init__(
        self,
        db: Database,
        kek: bytes,
        *,
        publish_delay: timedelta,
        token_lifetime: timedelta,
        reload_seconds: float = 5.0,
    ) -> None:
        self.db = db
        self.aead = AESGCM(kek)
        self.publish_delay = publish_delay
        self.token_lifetime = token_lifetime
        self.reload_seconds = reload_seconds
        self._keys: list[SigningKey] = []  # oldest first

    # -- reading --------------------------------------------------------------------------------
    def signer(self, now: datetime | None = None) -> SigningKey:
        now = now or datetime.now(UTC)
        active = [k for k in self._keys if k.signing_start <= now]
        if not active:
            raise FailedPrecondition("no signing key is active yet")
        return active[-1]

    def published(self, now: datetime | None = None) -> list[dict[str, str]]:
        """Keys to publish: the signer, pending keys, and keys that signed still-valid tokens."""
        now = now or datetime.now(UTC)
        keys = []
        for index, key in enumerate(self._keys):
            successor = self._keys[index + 1] if index + 1 < len(self._keys) else None
            retired_at = successor.signing_start if successor else None
            if retired_at is None or now < retired_at + self.token_lifetime + timedelta(minutes=1):
                keys.append(key.jwk)
        return keys

    async def public_key(self, kid: str):
        """Any key we ever made (refresh tokens outlive a key's time in the JWKS)."""
        for key in self._keys:
            if key.kid == kid:
                return key.public_key
        await self.load()
        return next((k.public_key for k in self._keys if k.kid == kid), None)

    # -- writing --------------------------------------------------------------------------------
    async def ensure_one(self) -> None:
        """Create the first key (signing at once) when there is none; replicas take turns."""
        async with self.db.transaction() as session:
            await store.lock_signing_keys(session)
            if not await store.has_signing_key(session):
                await store.add_signing_key(session, **self._new_row(datetime.now(UTC)))
        await self.load()

    async def rotate(self) -> SigningKey:
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            await store.lock_signing_keys(session)
            pending = await store.pending_signing_start(session, now)
            if pending is not None:
                raise FailedPrecondition(
                    f"a rotation is already pending: its key signs from {pending.isoformat()}"
                )
            row = self._new_row(now + self.publish_delay)
            await store.add_signing_key(session, **row)
        await self.load()
        return next(k for k in self._keys if k.kid == row["kid"])

    def _new_row(self, signing_start: datetime) -> dict[str, Any]:
        kid = uuid.uuid4().hex[:16]
        private_key = Ed25519PrivateKey.generate()
        raw_public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        jwk = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(raw_public),
            "kid": kid,
            "alg": "EdDSA",
            "use": "sig",
        }
        nonce = os.urandom(12)
        sealed = nonce + self.aead.encrypt(
            nonce, private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()), kid.encode()
        )
        return {
            "kid": kid,
            "public_jwk": json.dumps(jwk),
            "private_key_sealed": sealed,
            "signing_start_time": signing_start,
        }

    async def load(self) -> None:
        keys = []
        for row in await store.all_signing_keys(self.db):
            nonce, sealed = row.private_key_sealed[:12], row.private_key_sealed[12:]
            raw = self.aead.decrypt(nonce, sealed, row.kid.encode())
            keys.append(
                SigningKey(
                    row.kid,
                    Ed25519PrivateKey.from_private_bytes(raw),
                    json.loads(row.public_jwk),
                    row.signing_start_time,
                )
            )
        self._keys = keys

    async def run(self, stopping: asyncio.Event) -> None:
        """Reload periodically, so every replica signs with the same key after a rotation; when a
        reload fails, keep signing with the keys we have."""
        await run_every(
            self.reload_seconds, self.load, stopping, failure="could not reload signing keys", wait_first=True
        )
