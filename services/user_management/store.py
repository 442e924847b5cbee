"""The user management database: its tables and every query of the service, by name.

Callers open the transaction (`Database.transaction()`, so the outbox and idempotency keys write
in it) and pass its session; accounts come back as `domain.Account`. A database error the caller
must answer (an email taken) comes back as a `clinic_platform.errors` exception.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Table,
    Text,
    Uuid,
    and_,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clinic_platform.auth import Role
from clinic_platform.db import Database, new_metadata
from clinic_platform.errors import AlreadyExists
from user_management import domain
from user_management.domain import Account, Preferences, Profile

metadata = new_metadata()

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("email", Text, nullable=False),
    Column("email_key", Text, nullable=False, unique=True),  # lower-cased: unique case-insensitively
    Column("given_name", Text, nullable=False),
    Column("family_name", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("phone_number", Text, nullable=False, server_default=""),
    Column("birth_date", Date),
    Column("role", Text, nullable=False),
    Column("specialty", Text, nullable=False, server_default=""),
    Column("status", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("preferences", JSONB, nullable=False, server_default="{}"),
    Column("preferences_update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("version", Integer, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_users_role_name", "role", "family_name", "given_name", "id"),
    Index("ix_users_name", "family_name", "given_name", "id"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", Text, primary_key=True),
    Column("public_jwk", Text, nullable=False),
    Column("private_key_sealed", LargeBinary, nullable=False),  # AES-256-GCM under the KEK
    Column("signing_start_time", DateTime(timezone=True), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


def _account(row) -> Account | None:
    if row is None:
        return None
    values = row._asdict()
    values["preferences"] = Preferences.from_json(values["preferences"])
    return Account(**values)


# -- accounts -------------------------------------------------------------------------------------
async def user_by_id(session: AsyncSession, user_id: Any, *, for_update: bool = False) -> Account | None:
    query = select(users).where(users.c.id == user_id)
    if for_update:
        query = query.with_for_update()
    return _account((await session.execute(query)).first())


async def user_by_email_key(session: AsyncSession, key: str) -> Account | None:
    return _account((await session.execute(select(users).where(users.c.email_key == key))).first())


async def count_active_admins(session: AsyncSession, excluding: Any = None) -> int:
    query = (
        select(func.count())
        .select_from(users)
        .where(users.c.role == Role.ADMIN.value, users.c.status == domain.ACTIVE)
    )
    if excluding is not None:
        query = query.where(users.c.id != excluding)
    return await session.scalar(query)


def name_order(account: Account) -> list[Any]:
    """The keyset position of an account in `list_users`' order (for the next page's token)."""
    return [account.family_name, account.given_name, account.id]


async def list_users(
    session: AsyncSession, *, role: str | None, query: str, after: list[str] | None, limit: int
) -> list[Account]:
    """Up to `limit` + 1 accounts by name after the position `after`, filtered by role and by a
    prefix of a name or the email."""
    statement = select(users)
    if role:
        statement = statement.where(users.c.role == role)
    if query:
        prefix = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = statement.where(
            or_(
                func.lower(users.c.given_name).like(prefix),
                func.lower(users.c.family_name).like(prefix),
                users.c.email_key.like(prefix),
            )
        )
    if after:
        family, given, last_id = after
        statement = statement.where(
            or_(
                users.c.family_name > family,
                and_(users.c.family_name == family, users.c.given_name > given),
                and_(users.c.family_name == family, users.c.given_name == given, users.c.id > last_id),
            )
        )
    statement = statement.order_by(users.c.family_name, users.c.given_name, users.c.id).limit(limit + 1)
    return [_account(row) for row in (await session.execute(statement)).all()]


async def add_user(session: AsyncSession, profile: Profile, role: Role, password_hash: str) -> Account | None:
    """A new active account; None when the email is taken (case-insensitively)."""
    row = (
        await session.execute(
            upsert(users)
            .values(
                id=uuid.uuid4(),
                email=profile.email,
                email_key=domain.email_key(profile.email),
                given_name=profile.given_name,
                family_name=profile.family_name,
                display_name=domain.display_name_of(profile),
                phone_number=profile.phone_number,
                birth_date=profile.birth_date,
                role=role.value,
                specialty=profile.specialty,
                status=domain.ACTIVE,
                password_hash=password_hash,
                version=1,
            )
            .on_conflict_do_nothing(index_elements=["email_key"])
            .returning(users)
        )
    ).first()
    return _account(row)


async def update_user(session: AsyncSession, user_id: Any, changes: dict[str, Any]) -> Account:
    """Apply `changes` (column values) to a user locked by `user_id(..., for_update=True)`, as its
    next version."""
    try:
        row = (
            await session.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(**changes, version=users.c.version + 1, update_time=now())
                .returning(users)
            )
        ).one()
    except IntegrityError:
        raise AlreadyExists(domain.EMAIL_TAKEN) from None
    return _account(row)


async def set_preferences(session: AsyncSession, user_id: Any, preferences: Preferences) -> Account:
    """New notification preferences for a locked user, as its next version."""
    moment = now()
    row = (
        await session.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(
                preferences=preferences.to_json(),
                preferences_update_time=moment,
                update_time=moment,
                version=users.c.version + 1,
            )
            .returning(users)
        )
    ).one()
    return _account(row)


async def set_password_hash(session: AsyncSession, user_id: Any, password_hash: str) -> None:
    await session.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))


# -- signing keys ---------------------------------------------------------------------------------
async def lock_signing_keys(session: AsyncSession) -> None:
    """Replicas change the keys one at a time (until the transaction ends)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('user_management.signing_keys'))"))


async def has_signing_key(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(func.count()).select_from(signing_keys)))


async def pending_signing_start(session: AsyncSession, now: datetime) -> datetime | None:
    """When the newest key not yet signing starts to sign; None when every key already signs."""
    return await session.scalar(
        select(func.max(signing_keys.c.signing_start_time)).where(signing_keys.c.signing_start_time > now)
    )


async def add_signing_key(
    session: AsyncSession,
    *,
    kid: str,
    public_jwk: str,
    private_key_sealed: bytes,
    signing_start_time: datetime,
) -> None:
    await session.execute(
        insert(signing_keys).values(
            kid=kid,
            public_jwk=public_jwk,
            private_key_sealed=private_key_sealed,
            signing_start_time=signing_start_time,
        )
    )


async def all_signing_keys(db: Database) -> list[Any]:
    """Every key ever made (kid, public_jwk, private_key_sealed, signing_start_time), oldest first."""
    async with db.engine.connect() as conn:
        return (await conn.execute(select(signing_keys).order_by(signing_keys.c.signing_start_time))).all()


def now() -> datetime:
    return datetime.now(UTC)
