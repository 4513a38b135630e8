"""Engine and transactions for PostgreSQL (asyncpg) and the embedded SQLite default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 5000


def _unavailable_types() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (
        OSError,  # refused, reset, timed out
        exc.OperationalError,
        exc.InterfaceError,
        exc.TimeoutError,  # the pool had no connection to give
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,  # starting up or shutting down
        asyncpg.ObjectNotInPrerequisiteStateError,  # not accepting connections
        asyncpg.TooManyConnectionsError,
        asyncpg.AdminShutdownError,
        asyncpg.InterfaceError,
    )


UNAVAILABLE_TYPES = _unavailable_types()


def is_database_unavailable(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) says the database cannot be reached now.

    Such an error is the infrastructure's, not a bug: callers log one line, not a
    traceback per frame, and answer ``internal_error``.
    """
    seen: BaseException | None = error
    for _ in range(8):  # the cause chain is short; never loop on a cycle
        if seen is None:
            return False
        if isinstance(seen, UNAVAILABLE_TYPES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 driver's own transaction handling defers BEGIN to the first write and
    # turns a leading SAVEPOINT into a commit; switch it off and let SQLAlchemy's "begin"
    # event below issue BEGIN itself (the recipe in SQLAlchemy's SQLite dialect docs).
    dbapi_connection.isolation_level = None
    # WAL lets a CLI sweep read while the server writes; the busy timeout makes a second
    # process wait for the write lock instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front: a transaction that reads and then writes can
    # never fail half-way with SQLITE_BUSY because another process wrote in between.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An engine for ``url``.

    ``hide_parameters``: a database error's text would otherwise carry the bound values
    (message text, mediums with phone numbers) into whatever logs the exception.

    SQLite allows one writer at a time. Rather than letting concurrent frames fail, the
    embedded mode funnels every transaction through a single pooled connection: frames wait
    their turn for a few milliseconds instead of erroring, and ``SELECT ... FOR UPDATE``
    (which SQLite ignores) is not needed for correctness there.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url,
            echo=echo,
            hide_parameters=True,
            pool_size=1,
            max_overflow=0,
            pool_timeout=30,
        )
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        event.listen(engine.sync_engine, "begin", _begin_immediate)
        return engine
    return create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


class Database:
    """Owns the engine of the read side (snapshots, history, lookups); every write goes
    through the pipeline's store."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = create_engine(url, echo=echo)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside ``BEGIN``; committed on success, rolled back on any exception."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()
