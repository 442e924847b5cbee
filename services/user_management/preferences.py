"""Notification preferences use-cases: a user (or an admin) reads and changes which channels
each kind of message goes to. A change is a new version of the account, published as UserUpdated
so the notification service sends by the new choice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clinic_platform.auth import Caller
from clinic_platform.db import Database
from clinic_platform.outbox import Outbox
from user_management import domain, messages, store
from user_management.accounts import Accounts, locked
from user_management.domain import Account, Preferences


class NotificationPreferences:
    def __init__(self, db: Database, outbox: Outbox, accounts: Accounts) -> None:
        self.db = db
        self.outbox = outbox
        self.accounts = accounts

    async def get(self, me: Caller, user_id: Any) -> Account:
        domain.may_manage_preferences(me, str(user_id))
        return await self.accounts.by_id(user_id)

    async def update(
        self, me: Caller, user_id: Any, read: Callable[[], tuple[set[str], Preferences]]
    ) -> Account:
        """Replace the parts named by the request's mask (`read` gives them, checked)."""
        domain.may_manage_preferences(me, str(user_id))
        paths, wanted = read()
        async with self.db.transaction() as session:
            account = await locked(session, user_id)
            chosen = domain.with_preferences(account.preferences, wanted, paths)
            account = await store.set_preferences(session, user_id, chosen)
            await self.outbox.add(session, messages.updated(account), aggregate_id=str(account.id))
        return account
