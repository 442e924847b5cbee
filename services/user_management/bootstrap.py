"""The first admin: created at start from BOOTSTRAP_ADMIN_EMAIL / BOOTSTRAP_ADMIN_PASSWORD (a
Secret), so a new clinic can sign in and create everyone else through the API."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.dialects.postgresql import insert

from clinic.user_management.v1 import events_pb2
from clinic_platform.auth import Role
from clinic_platform.convert import timestamp
from user_management import domain, store
from user_management.api import Identity, _snapshot
from user_management.domain import Profile

log = logging.getLogger(__name__)


async def ensure_bootstrap_admin(identity: Identity, settings) -> None:
    email = settings.bootstrap_admin_email.strip()
    password = settings.bootstrap_admin_password.get_secret_value()
    if not email or not password:
        return
    profile = domain.check_profile(Profile(email, "Clinic", "Administrator"), role=Role.ADMIN)
    domain.check_password(password, profile)
    async with identity.db.transaction() as session:
        if await store.user_by_email_key(session, domain.email_key(email)) is not None:
            return
        row = (
            await session.execute(
                insert(store.users)
                .values(
                    id=uuid.uuid4(),
                    email=profile.email,
                    email_key=domain.email_key(email),
                    given_name="Clinic",
                    family_name="Administrator",
                    display_name="Clinic Administrator",
                    role=Role.ADMIN.value,
                    status="ACTIVE",
                    password_hash=await identity.passwords.hash(password),
                    version=1,
                )
                .on_conflict_do_nothing(index_elements=["email_key"])
                .returning(store.users)
            )
        ).first()
        if row is None:  # another replica made it just now
            return
        event = _snapshot(events_pb2.UserRegistered, row, create_time=timestamp(row.create_time))
        await identity.outbox.add(session, event, aggregate_id=str(row.id))
    log.info("bootstrap admin created", extra={"email": email})
