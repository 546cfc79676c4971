"""The database: engine, session factory, column types, and schema migrations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
E = TypeVar("E", bound=StrEnum)

# Naming convention so that Alembic migrations name constraints the same on every backend.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SessionFactory = async_sessionmaker[AsyncSession]


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware datetime stored in UTC on every backend.

    SQLite has no time zones and hands back naive values; this type refuses naive input
    and returns aware UTC datetimes, so code never compares naive with aware.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class StrEnumType(sa.types.TypeDecorator[E]):
    """A string enum stored as plain VARCHAR (no native enum types to migrate) that reads
    back as the enum member, so ``user.role is Role.ADMIN`` holds after a load."""

    impl = sa.String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def load_models() -> sa.MetaData:
    """Import every table module so that the metadata knows all tables."""
    from telemed import audit  # noqa: F401
    from telemed.accounts import models as _accounts  # noqa: F401
    from telemed.chat import models as _chat  # noqa: F401
    from telemed.documents import models as _documents  # noqa: F401
    from telemed.media import models as _media  # noqa: F401
    from telemed.notify import models as _notify  # noqa: F401
    from telemed.scheduling import models as _scheduling  # noqa: F401

    return SQLModel.metadata


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    kwargs: dict[str, Any] = {"echo": echo}
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        # One writer at a time: wait for the lock instead of failing at once.
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def create_sqlite_writer(url: str) -> sa.Engine | None:
    """For an SQLite database, a synchronous engine of one connection, for work that runs
    as a whole in one worker thread (the chat writer's group commits: one hand-off from
    the event loop per batch instead of one per statement). ``None`` for other databases.
    Same pragmas and ``BEGIN`` rules as ``create_engine``; SQLite's own lock and
    ``busy_timeout`` order its transactions with the async engine's."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    engine = sa.create_engine(
        parsed.set(drivername="sqlite+pysqlite"),
        poolclass=StaticPool,
        connect_args={"timeout": 30, "check_same_thread": False},
    )
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


WRITE = {"telemed_write": True}
"""Execution options of a session that will write (see ``_sqlite_begin``)."""


def _sqlite_begin(connection: Connection) -> None:
    # SQLite lets one writer at a time. A transaction that starts as a reader and then
    # writes fails at once ("database is locked", no waiting) if another writer committed
    # in between, so a transaction that will write takes the write lock when it begins,
    # and waits for it (busy_timeout) instead.
    write = connection.get_execution_options().get("telemed_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are begun by ``_sqlite_begin``, not by the driver's own guesswork
    # (which also breaks SAVEPOINTs).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


GATE = "telemed_write_gate"
_HOLDS_GATE = "telemed_holds_write_gate"


class _Session(Session):
    """The sessions of our factories: they let go of the write gate when their
    transaction ends (``after_transaction_end`` below)."""


@sa.event.listens_for(_Session, "after_transaction_end")
def _release_gate(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and session.info.pop(_HOLDS_GATE, False):
        session.info[GATE].release()


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions that do not expire what they loaded on commit. On SQLite, writing
    transactions of this process also pass one at a time through a FIFO gate (see
    ``begin_write``)."""
    info = {GATE: asyncio.Lock()} if engine.dialect.name == "sqlite" else {}
    return async_sessionmaker(
        engine,
        class_=AsyncSession,
        expire_on_commit=False,
        sync_session_class=_Session,
        info=info,
    )


def write_gate(factory: SessionFactory) -> asyncio.Lock | None:
    """The factory's write gate (SQLite), for writers that bypass its sessions."""
    gate: asyncio.Lock | None = factory.kw.get("info", {}).get(GATE)
    return gate


async def begin_write(session: AsyncSession) -> None:
    """Begin the session's transaction as one that will write (call before any query).

    On SQLite, writing transactions wait for each other in SQLite's busy loop, which
    polls: a run of short transactions (an import in chunks) could take the lock again
    and again before a single waiting write polls at the right moment. So the
    transactions of this process first queue, first come first served, at the
    factory's gate, held until the transaction ends."""
    gate: asyncio.Lock | None = session.info.get(GATE)
    if gate is not None:
        await gate.acquire()
        session.info[_HOLDS_GATE] = True
    try:
        await session.connection(execution_options=WRITE)
    except BaseException:
        if session.info.pop(_HOLDS_GATE, False):
            gate.release()  # type: ignore[union-attr]  # held: set just above
        raise


@asynccontextmanager
async def transaction(
    factory: SessionFactory, *, write: bool = True
) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed on success and rolled back on any error."""
    async with factory() as session:
        if write:
            await begin_write(session)
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # Several processes may start at once: one migrates, the others wait for it.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(7243190001)"))
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply the Alembic migrations up to ``revision`` (idempotent)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade, revision)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(sa.text("SELECT 1"))
