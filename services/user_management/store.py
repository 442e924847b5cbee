"""Tables of the user management database, and the queries the API needs."""

from __future__ import annotations

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
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from clinic_platform.db import new_metadata

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


async def user_by_id(session: AsyncSession, user_id: Any, *, for_update: bool = False):
    query = select(users).where(users.c.id == user_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def user_by_email_key(session: AsyncSession, key: str):
    return (await session.execute(select(users).where(users.c.email_key == key))).first()


async def count_active_admins(session: AsyncSession, excluding: Any = None) -> int:
    query = select(func.count()).select_from(users).where(users.c.role == "ADMIN", users.c.status == "ACTIVE")
    if excluding is not None:
        query = query.where(users.c.id != excluding)
    return await session.scalar(query)


async def list_users(
    session: AsyncSession, *, role: str | None, query: str, after: list[str] | None, limit: int
):
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
    return (await session.execute(statement)).all()


def now() -> datetime:
    return datetime.now(UTC)
