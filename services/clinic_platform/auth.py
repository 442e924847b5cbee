"""Who is calling: every service verifies every call's access token, then authorizes on the caller.

An access token is an EdDSA-signed JWT (header `typ: at+jwt`, `kid`) with `iss`, `aud`, `sub`
(user id), `role`, `sid` (session) and `exp`. The interceptor hook checks the algorithm against an
allow-list, the signature with the key named by `kid` (from user_management's JWKS, `jwks.py`),
the claims, and that the session still lives in Redis; then the handler reads the typed caller:

    me = auth.caller()                              # Unauthenticated when there is none
    auth.require_role(Role.ADMIN)                   # PermissionDenied otherwise
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import jwt
from jwt.algorithms import OKPAlgorithm

from clinic_platform.errors import PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

ALGORITHMS = ["EdDSA"]  # the allow-list: never "none", never an HMAC algorithm
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a JWT type, RFC 9068
REFRESH_TOKEN_TYPE = "refresh+jwt"  # noqa: S105 - a JWT type
SESSION_KEY = "session:{sid}"  # written by user_management, read by every service

# The only RPCs anyone may call without an access token; the edge opens exactly their routes.
OPEN_METHODS = frozenset(
    f"/clinic.user_management.v1.UserManagementService/{method}"
    for method in ("Register", "Login", "Refresh", "GetJwks")
)
# Public RPCs a single client may call only a few times a minute (the edge limits per client).
RATE_LIMITED_METHODS = frozenset(
    f"/clinic.user_management.v1.UserManagementService/{method}" for method in ("Register", "Login")
)


class Role(StrEnum):
    PATIENT = "PATIENT"
    DOCTOR = "DOCTOR"
    NURSE = "NURSE"
    RECEPTIONIST = "RECEPTIONIST"
    ADMIN = "ADMIN"
    ANALYST = "ANALYST"


STAFF = (Role.DOCTOR, Role.NURSE, Role.RECEPTIONIST, Role.ADMIN)


def _rpc(service: str, method: str) -> str:
    return f"/clinic.{service}.v1.{service.title().replace('_', '')}Service/{method}"


# RPCs that only some roles may call at all, whatever the request says. The interceptor checks
# these before it validates the request, so a caller who may not call an RPC learns nothing from it
# (not even which input it would refuse): a patient creating a user gets 403, never 400. Finer
# rules (a receptionist creates patients only) stay in the handlers.
ROLE_GATES: dict[str, tuple[Role, ...]] = {
    _rpc("user_management", "CreateUser"): (Role.ADMIN, Role.RECEPTIONIST),
    _rpc("user_management", "ListUsers"): STAFF,
    _rpc("user_management", "RotateSigningKey"): (Role.ADMIN,),
    **{_rpc("notification", m): (Role.ADMIN,) for m in ("ListTemplates", "GetTemplate", "UpdateTemplate")},
    _rpc("notification", "ListReminders"): (Role.PATIENT, Role.RECEPTIONIST, Role.ADMIN),
    **{_rpc("payment", m): (Role.ADMIN,) for m in ("UpdateFee", "UpdateInvoice", "CreateRefund")},
}


@dataclass(frozen=True)
class Caller:
    user_id: str
    role: Role
    session_id: str
    token: str  # forwarded on calls made on the caller's behalf

    def has_role(self, *roles: Role) -> bool:
        return self.role in roles


caller_var: ContextVar[Caller | None] = ContextVar("caller", default=None)


def caller() -> Caller:
    current = caller_var.get()
    if current is None:
        raise Unauthenticated("sign in first: this call needs an access token")
    return current


def require_role(*roles: Role) -> Caller:
    current = caller()
    if current.role not in roles:
        allowed = ", ".join(r.lower() for r in roles)
        raise PermissionDenied(f"only {allowed} may do this")
    return current


async def role_gate(method: str, _metadata: dict[str, str]) -> None:
    """The interceptor hook that applies ROLE_GATES (after authentication)."""
    roles = ROLE_GATES.get(method)
    if roles is not None:
        require_role(*roles)


class KeySource(Protocol):
    async def public_key(self, kid: str) -> Any | None: ...


def public_key_from_jwk(jwk: dict[str, Any]) -> Any:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError(f"unsupported key type {jwk.get('kty')}/{jwk.get('crv')}")
    return OKPAlgorithm.from_jwk(jwk)


class TokenVerifier:
    """Verifies JWTs against a key source, remembering recent verdicts for repeated tokens."""

    def __init__(self, keys: KeySource, *, issuer: str, audience: str, cache_size: int = 10_000) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.cache_size = cache_size
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def verify(
        self, token: str, *, token_type: str = ACCESS_TOKEN_TYPE, audience: str | None = None
    ) -> dict:
        cached = self._verified.get(token)
        if cached is not None and token_type == ACCESS_TOKEN_TYPE:
            if cached["exp"] <= time.time():
                raise Unauthenticated("the access token has expired")
            self._verified.move_to_end(token)
            return cached
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("the bearer token is not a JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise Unauthenticated(f"token algorithm {header.get('alg')!r} is not accepted")
        if header.get("typ") != token_type:
            raise Unauthenticated(f"a {header.get('typ') or 'untyped'} token cannot be used here")
        key = await self.keys.public_key(str(header.get("kid", "")))
        if key is None:
            raise Unauthenticated("the token is signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=audience or self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "sid", "role"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        if token_type == ACCESS_TOKEN_TYPE:
            self._verified[token] = claims
            if len(self._verified) > self.cache_size:
                self._verified.popitem(last=False)
        return claims


class SessionCheck:
    """Is the session still alive? Positive answers are remembered for `cache_seconds` (≤ 1 s),
    so a logout stops a token everywhere within that time without a Redis round trip per call."""

    def __init__(self, redis: Any, cache_seconds: float = 1.0) -> None:
        self.redis = redis
        self.cache_seconds = cache_seconds
        self._alive_until: dict[str, float] = {}

    async def alive(self, sid: str) -> bool:
        now = time.monotonic()
        if self._alive_until.get(sid, 0.0) > now:
            return True
        if not await self.redis.exists(SESSION_KEY.format(sid=sid)):
            self._alive_until.pop(sid, None)
            return False
        if len(self._alive_until) > 50_000:
            self._alive_until = {k: v for k, v in self._alive_until.items() if v > now}
        self._alive_until[sid] = now + self.cache_seconds
        return True

    def forget(self, sid: str) -> None:
        """The session just ended here: stop trusting it in this process at once."""
        self._alive_until.pop(sid, None)


class Authenticator:
    """The interceptor hook: verifies the bearer token of every call but the open ones."""

    def __init__(self, verifier: TokenVerifier, sessions: SessionCheck, open_methods: set[str]) -> None:
        self.verifier = verifier
        self.sessions = sessions
        self.open_methods = open_methods

    async def __call__(self, method: str, metadata: dict[str, str]) -> None:
        if method in self.open_methods:
            return
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <access token>'")
        claims = await self.verifier.verify(token.strip())
        if not await self.sessions.alive(claims["sid"]):
            raise Unauthenticated("the session has ended: sign in again")
        try:
            role = Role(claims["role"])
        except ValueError:
            raise Unauthenticated("the token carries an unknown role") from None
        caller_var.set(Caller(claims["sub"], role, claims["sid"], token.strip()))
