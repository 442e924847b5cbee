"""Login, Refresh and Logout: a password check starts a session (sessions.py) and mints its first
tokens (tokens.py); a refresh token is exchanged once for the next pair; logout ends the session.

Every failed login gets the same answer, whether the email is unknown, the account deactivated or
locked, or the password wrong, and takes as long (passwords.py verifies against a dummy hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from clinic_platform.auth import REFRESH_TOKEN_TYPE, Caller, SessionCheck, TokenVerifier
from clinic_platform.db import Database
from clinic_platform.errors import InvalidArgument, Unauthenticated
from user_management import domain, store
from user_management.domain import Account
from user_management.passwords import Passwords
from user_management.sessions import Rotation, Session, SessionStore
from user_management.tokens import TokenIssuer

INVALID_LOGIN = "invalid email or password"  # the one answer for every failed login
SESSION_ENDED = "the session has ended: sign in again"


@dataclass(frozen=True)
class Grant:
    """The tokens a login or refresh hands out."""

    access_token: str
    expires_in: int  # seconds
    refresh_token: str
    refresh_expire_time: datetime


class Logins:
    def __init__(
        self,
        db: Database,
        passwords: Passwords,
        sessions: SessionStore,
        *,
        tokens: TokenIssuer,
        refresh_verifier: TokenVerifier,
        session_check: SessionCheck,  # this process's cache of live sessions
    ) -> None:
        self.db = db
        self.passwords = passwords
        self.sessions = sessions
        self.tokens = tokens
        self.refresh_verifier = refresh_verifier
        self.session_check = session_check

    async def login(self, email: str, password: str) -> tuple[Account, Grant]:
        if not email.strip():
            raise InvalidArgument("email", "is required")
        if not password:
            raise InvalidArgument("password", "is required")
        key = domain.email_key(email)
        async with self.db.sessions() as session:
            account = await store.user_by_email_key(session, key)
        locked = await self.sessions.locked(key)
        usable = account is not None and account.status == domain.ACTIVE and not locked
        if not await self.passwords.verify(account.password_hash if usable else None, password):
            if not locked:
                await self.sessions.record_failure(key)
            raise Unauthenticated(INVALID_LOGIN)
        await self.sessions.clear_failures(key)
        if self.passwords.needs_rehash(account.password_hash):
            await self._rehash(account.id, password)
        user_session, jti = await self.sessions.start(str(account.id), account.role)
        return account, self._grant(user_session, jti)

    async def _rehash(self, user_id: UUID, password: str) -> None:
        new_hash = await self.passwords.hash(password)
        async with self.db.transaction() as session:
            await store.set_password_hash(session, user_id, new_hash)

    async def refresh(self, refresh_token: str) -> Grant:
        if not refresh_token:
            raise InvalidArgument("refresh_token", "is required")
        claims = await self.refresh_verifier.verify(
            refresh_token, token_type=REFRESH_TOKEN_TYPE, audience=self.tokens.refresh_audience
        )
        user_session = await self.sessions.get(claims["sid"])
        if user_session is None:
            raise Unauthenticated(SESSION_ENDED)
        outcome, jti = await self.sessions.rotate(user_session, claims.get("jti", ""))
        if outcome is Rotation.REUSED:
            raise Unauthenticated(
                "this refresh token was already used; the session has been ended for safety"
            )
        if outcome is not Rotation.ROTATED:
            raise Unauthenticated(SESSION_ENDED)
        return self._grant(user_session, jti)

    def _grant(self, user_session: Session, jti: str) -> Grant:
        expiry = self.sessions.refresh_expiry(user_session)
        user_id, role, sid = user_session.user_id, user_session.role, user_session.sid
        return Grant(
            access_token=self.tokens.access_token(user_id, role, sid),
            expires_in=self.tokens.access_seconds,
            refresh_token=self.tokens.refresh_token(user_id, role, sid, jti, expiry),
            refresh_expire_time=datetime.fromtimestamp(expiry, UTC),
        )

    async def logout(self, me: Caller) -> None:
        await self.sessions.end(me.session_id, me.user_id)
        self.session_check.forget(me.session_id)
