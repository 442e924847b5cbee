"""Account use-cases: register and create (idempotent per AIP-155), read, list, update and
deactivate. Each runs the domain's rules over the store in one transaction, and every change
writes its event to the outbox in that transaction.

A request's content is read (`read`) only once the caller is known to be allowed to make it, so
someone who may not learns nothing from how their input would have been judged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

from clinic_platform import idempotency
from clinic_platform.auth import Caller, Role
from clinic_platform.db import Database
from clinic_platform.errors import AlreadyExists, NotFound
from clinic_platform.idempotency import IdempotencyKeys
from clinic_platform.outbox import Outbox
from clinic_platform.pagination import Page
from user_management import domain, messages, store
from user_management.domain import Account, Profile
from user_management.passwords import Passwords
from user_management.sessions import SessionStore

R = TypeVar("R", bound=Message)


@dataclass(frozen=True)
class UserChange:
    """What an UpdateUser request asks for; None keeps the role or status."""

    role: Role | None
    status: str | None
    profile: Profile


class Accounts:
    def __init__(self, db: Database, outbox: Outbox, passwords: Passwords, sessions: SessionStore) -> None:
        self.db = db
        self.outbox = outbox
        self.passwords = passwords
        self.sessions = sessions
        self.idempotency = IdempotencyKeys(db.metadata)

    async def register(self, profile: Profile, password: str, request: Message, response_type: type[R]) -> R:
        """A patient signing themself up (no caller)."""
        domain.check_profile(profile, role=Role.PATIENT)
        domain.check_password(password, profile)
        return await self._create(
            request, profile, Role.PATIENT, password=password, scope="Register", response_type=response_type
        )

    async def create(
        self,
        me: Caller,
        role: Role,
        read: Callable[[], Profile],
        *,
        password: str,
        request: Message,
        response_type: type[R],
    ) -> R:
        """Staff creating someone's account."""
        domain.may_create(me, role)
        profile = domain.check_profile(read(), role=role, prefix="user.")
        domain.check_password(password, profile)
        scope = idempotency.scope("CreateUser", me.user_id)
        return await self._create(
            request, profile, role, password=password, scope=scope, response_type=response_type
        )

    async def _create(
        self, request: Any, profile: Profile, role: Role, *, password: str, scope: str, response_type: type[R]
    ) -> R:
        password_hash = await self.passwords.hash(password)
        async with self.db.transaction() as session:
            if request.request_id:
                earlier = await self.idempotency.claim(
                    session, scope, request.request_id, request, response_type, secret_fields=("password",)
                )
                if earlier is not None:
                    return earlier
            account = await store.add_user(session, profile, role, password_hash)
            if account is None:
                raise AlreadyExists(domain.EMAIL_TAKEN)
            await self.outbox.add(session, messages.registered(account), aggregate_id=str(account.id))
            response = response_type(user=messages.user(account))
            if request.request_id:
                await self.idempotency.remember(session, scope, request.request_id, response)
        return response

    async def get(self, me: Caller, user_id: Any) -> Account:
        domain.may_view(me, str(user_id))
        return await self.by_id(user_id)

    async def by_id(self, user_id: Any) -> Account:
        """The account, whoever asks (the caller's rights are checked before)."""
        async with self.db.sessions() as session:
            account = await store.user_by_id(session, user_id)
        if account is None:
            raise NotFound(f"user {user_id} not found")
        return account

    async def list_users(
        self, me: Caller, *, role: str | None, query: str, page: Page
    ) -> tuple[list[Account], str]:
        """One page of accounts by name, and the next page's token."""
        domain.may_list(me)
        async with self.db.sessions() as session:
            accounts = await store.list_users(
                session, role=role, query=query, after=page.after, limit=page.size
            )
        return page.take(accounts, store.name_order)

    async def update(
        self, me: Caller, user_id: Any, paths: set[str], read: Callable[[], UserChange]
    ) -> Account:
        async with self.db.transaction() as session:
            account = await locked(session, user_id)
            domain.may_update(me, str(user_id), Role(account.role), paths)
            wanted = read()
            role = wanted.role if wanted.role is not None else Role(account.role)
            status = wanted.status if wanted.status is not None else account.status
            changes = domain.profile_changes(account.profile(), wanted.profile, paths, role)
            if domain.loses_an_admin(account, role, status):
                domain.keep_an_admin(await store.count_active_admins(session, excluding=user_id))
            account = await store.update_user(
                session, user_id, changes | {"role": role.value, "status": status}
            )
            await self.outbox.add(session, messages.updated(account), aggregate_id=str(account.id))
        if {"role", "status"} & paths:
            await self.sessions.end_all(str(user_id))  # tokens must not outlive a changed role
        return account

    async def deactivate(self, me: Caller, user_id: Any) -> Account:
        domain.may_deactivate(me, str(user_id))
        async with self.db.transaction() as session:
            account = await locked(session, user_id)
            if account.status == domain.DEACTIVATED:
                return account
            if domain.loses_an_admin(account, Role(account.role), domain.DEACTIVATED):
                domain.keep_an_admin(await store.count_active_admins(session, excluding=user_id))
            account = await store.update_user(session, user_id, {"status": domain.DEACTIVATED})
            await self.outbox.add(session, messages.deactivated(account), aggregate_id=str(account.id))
        await self.sessions.end_all(str(user_id))
        return account


async def locked(session: Any, user_id: Any) -> Account:
    """The account, locked until the transaction ends."""
    account = await store.user_by_id(session, user_id, for_update=True)
    if account is None:
        raise NotFound(f"user {user_id} not found")
    return account
