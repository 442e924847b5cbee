"""A service's database: async SQLAlchemy engine, transactions that wake the outbox relay, and the
tables every service shares (outbox, inbox, relay state)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

# Constraint names follow one convention so Alembic migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """A service's MetaData, with the kit's tables (outbox, inbox, relay state, idempotency keys)
    already in it; `clinic_platform/kit_migrations` creates them."""
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("topic", Text, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("aggregate_id", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("request_id", Text),
        Column("occurred_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        # Deliveries the broker refused (a broker that is down does not count), the last refusal,
        # and when the relay stopped trying: see "parking" in clinic_platform.outbox.
        Column("attempts", SmallInteger, nullable=False, server_default=text("0")),
        Column("last_error", Text),
        Column("parked_at", DateTime(timezone=True)),
        # What the relay still has to send, in order; and the few rows it gave up on.
        Index(
            "ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL AND parked_at IS NULL")
        ),
        Index("ix_outbox_published_at", "published_at"),
        Index("ix_outbox_parked", "id", postgresql_where=text("parked_at IS NOT NULL")),
    )
    Table(
        "inbox",
        metadata,
        Column("event_id", Uuid, primary_key=True),
        Column("consumer", Text, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index("ix_inbox_received_at", "received_at"),
    )
    Table(
        "idempotency_keys",
        metadata,
        Column("scope", Text, primary_key=True),
        Column("request_id", Text, primary_key=True),
        Column("fingerprint", Text, nullable=False),
        Column("response", LargeBinary),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )
    Table(
        "outbox_relay_state",
        metadata,
        Column("id", SmallInteger, primary_key=True),
        Column("broker_cluster_id", Text),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    return metadata


async def _keep_session(connection: asyncpg.Connection) -> None:
    """asyncpg resets a connection on its way back to the pool with one more round trip
    (RESET ALL, UNLISTEN, advisory unlock). Statements run on this pool leave no session state
    (no SET, LISTEN, session-level locks or temporary tables), so there is nothing to reset."""


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Call `callback` once the transaction of `session` (from `Database.transaction`) has
    committed, e.g. to wake the loop that works on what it wrote; once however often it is asked."""
    session.info.setdefault("after_commit", {})[callback] = None


def is_connection_error(exc: BaseException) -> bool:
    """True when the database (not the statement) failed: worth retrying, never a poison event."""
    connection_errors = (
        OperationalError,
        InterfaceError,
        ConnectionError,
        OSError,
        asyncio.TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
    )
    if isinstance(exc, connection_errors):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class Database:
    """Engine and session factory of one service database.

    `transaction()` commits on success and then pokes `on_commit` (the outbox relay) when the
    transaction wrote events, so events leave within milliseconds without LISTEN/NOTIFY, whose
    commit-time lock would serialize every booking.
    """

    def __init__(self, url: str, metadata: MetaData, *, pool_size: int = 10, echo: bool = False) -> None:
        self.metadata = metadata
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=False,
            pool_recycle=1800,
            echo=echo,
            # A statement's error names the statement but not its values: errors reach logs and
            # DLQ headers, and values are personal data.
            hide_parameters=True,
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.event_listeners: list[Callable[[], None]] = []
        self._dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        """asyncpg itself, for the few hot single statements (a booking): SQLAlchemy's async layer
        costs about three times the CPU of the statement. Everything else uses the engine."""
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=self._pool_size, reset=_keep_session
                    )
        return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session
        if session.info.get("wrote_events"):
            self.events_written()
        for callback in session.info.get("after_commit", {}):
            callback()

    def events_written(self) -> None:
        """Tell the outbox relay that a committed transaction wrote events."""
        for listener in self.event_listeners:
            listener()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        await self.engine.dispose()


async def raw_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under `session`'s transaction, for a consumer's hot statements:
    SQLAlchemy's async layer costs several times the CPU of a short statement."""
    connection = await (await session.connection()).get_raw_connection()
    raw: asyncpg.Connection = connection.driver_connection
    if not raw.is_in_transaction():
        # SQLAlchemy's asyncpg adapter opens the transaction with its first statement.
        await session.execute(text("SELECT 1"))
    return raw


def wrote_events(session: AsyncSession) -> None:
    """Tell the outbox relay, once `session` commits, that it wrote outbox rows itself."""
    session.info["wrote_events"] = True
