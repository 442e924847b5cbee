"""Minting access and refresh tokens (EdDSA JWTs) with the key ring's current signer.

An access token (`typ: at+jwt`, audience the API) lives at most 15 minutes; a refresh token
(`typ: refresh+jwt`, its own audience, so no edge or service accepts it as an access token)
carries the session and the id of the one refresh it allows.
"""

from __future__ import annotations

import time
import uuid

import jwt

from clinic_platform.auth import ACCESS_TOKEN_TYPE, REFRESH_TOKEN_TYPE
from user_management.keys import KeyRing

MAX_ACCESS_SECONDS = 15 * 60


class TokenIssuer:
    def __init__(
        self, keys: KeyRing, *, issuer: str, audience: str, refresh_audience: str, access_seconds: int
    ) -> None:
        if not 0 < access_seconds <= MAX_ACCESS_SECONDS:
            raise ValueError("access tokens live at most 15 minutes")
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.refresh_audience = refresh_audience
        self.access_seconds = access_seconds

    def _sign(self, claims: dict, token_type: str) -> str:
        key = self.keys.signer()
        return jwt.encode(
            claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": token_type}
        )

    def access_token(self, user_id: str, role: str, sid: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "role": role,
            "sid": sid,
            "iat": now,
            "nbf": now,
            "exp": now + self.access_seconds,
            "jti": uuid.uuid4().hex,
        }
        return self._sign(claims, ACCESS_TOKEN_TYPE)

    def refresh_token(self, user_id: str, role: str, sid: str, jti: str, expires_at: float) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.refresh_audience,
            "sub": user_id,
            "role": role,
            "sid": sid,
            "iat": now,
            "exp": int(expires_at),
            "jti": jti,
        }
        return self._sign(claims, REFRESH_TOKEN_TYPE)
