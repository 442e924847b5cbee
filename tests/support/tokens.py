"""Forged and stale tokens for the security tests.

Some are signed with the stack's real current key, read from the user_management database with
the stack's key-encryption key: that is how the tests make a token whose signature is genuine
but whose claims are wrong (expired, another issuer, another audience)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinic_platform.db import Database
from local_stack.stack import Stack
from user_management import store
from user_management.keys import KeyRing, decode_kek


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(token: str) -> tuple[dict, dict, str]:
    header, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(header))),
        json.loads(base64.urlsafe_b64decode(pad(payload))),
        signature,
    )


def real_signer(stack: Stack):
    """The stack's current signing key (kid, private key)."""

    async def load():
        db = Database(stack.database_urls["user_management"], store.metadata)
        keys = KeyRing(
            db,
            decode_kek(stack.identity_secrets()["signing_key_encryption_key"]),
            publish_delay=timedelta(0),
            token_lifetime=timedelta(minutes=15),
        )
        await keys.load()
        await db.close()
        return keys.signer()

    key = asyncio.run(load())
    return key.kid, key.private_key, key.jwk


class Forger:
    def __init__(self, stack: Stack, genuine_access_token: str) -> None:
        self.kid, self.private_key, self.jwk = real_signer(stack)
        self.header, self.claims, _ = _segments(genuine_access_token)

    def signed(self, **changes) -> str:
        """A token signed with the real key, with claims changed."""
        claims = {**self.claims, **changes}
        return jwt.encode(
            claims, self.private_key, algorithm="EdDSA", headers={"kid": self.kid, "typ": "at+jwt"}
        )

    def expired(self) -> str:
        now = int(time.time())
        return self.signed(iat=now - 3600, nbf=now - 3600, exp=now - 600)

    def alg_none(self) -> str:
        header = {"alg": "none", "typ": "at+jwt", "kid": self.kid}
        return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(self.claims).encode())}."

    def hs256_with_public_key(self) -> str:
        """The classic confusion attack: HMAC keyed with the published public key."""
        header = {"alg": "HS256", "typ": "at+jwt", "kid": self.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(self.claims).encode())}"
        public_key = base64.urlsafe_b64decode(self.jwk["x"] + "==")
        signature = hmac.new(public_key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"

    def unknown_kid(self) -> str:
        stranger = Ed25519PrivateKey.generate()
        return jwt.encode(
            self.claims, stranger, algorithm="EdDSA", headers={"kid": uuid.uuid4().hex, "typ": "at+jwt"}
        )

    @staticmethod
    def payload_edited(token: str, **changes) -> str:
        """A genuine token whose payload was changed after signing (signature kept)."""
        header, _, signature = token.split(".")
        _, claims, _ = _segments(token)
        edited = _b64(json.dumps({**claims, **changes}).encode())
        return f"{header}.{edited}.{signature}"
