"""The first admin: created at start from BOOTSTRAP_ADMIN_EMAIL / BOOTSTRAP_ADMIN_PASSWORD (a
Secret), so a new clinic can sign in and create everyone else through the API."""

from __future__ import annotations

import logging

from clinic_platform.auth import Role
from clinic_platform.db import Database
from clinic_platform.outbox import Outbox
from user_management import domain, messages, store
from user_management.domain import Profile
from user_management.passwords import Passwords

log = logging.getLogger(__name__)


async def ensure_bootstrap_admin(db: Database, outbox: Outbox, passwords: Passwords, settings) -> None:
    email = settings.bootstrap_admin_email.strip()
    password = settings.bootstrap_admin_password.get_secret_value()
    if not email or not password:
        return
    profile = domain.check_profile(Profile(email, "Clinic", "Administrator"), role=Role.ADMIN)
    domain.check_password(password, profile)
    async with db.transaction() as session:
        if await store.user_by_email_key(session, domain.email_key(email)) is not None:
            return
        account = await store.add_user(session, profile, Role.ADMIN, await passwords.hash(password))
        if account is None:  # another replica made it just now
            return
        await outbox.add(session, messages.registered(account), aggregate_id=str(account.id))
    log.info("bootstrap admin created", extra={"email": email})
