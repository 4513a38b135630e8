"""Test databases: the embedded SQLite always, PostgreSQL too when its URL is given.

``WORKSESSION_TEST_DATABASE_URL`` names a PostgreSQL server (any database on it); each run
creates a fresh database there, builds the schema with the Alembic migrations (never
``create_all``) and drops it at the end. When the variable is set, an unreachable server
is an error, not a skip: CI must not go green by testing less. When it is not set, every
PostgreSQL variant is still collected, and reported as skipped with the variable named.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from worksession import migrate
from worksession.kit.db import Database
from worksession.models import Base

PG_URL = os.environ.get("WORKSESSION_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("WORKSESSION_TEST_REDIS_URL")
NEEDS_PG_URL = "needs WORKSESSION_TEST_DATABASE_URL (a PostgreSQL server; CI sets it)"
# Collected on every run and skipped without the URL: a local run shows how much it did
# not test instead of silently collecting fewer tests.
BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason=NEEDS_PG_URL)),
]


def _admin_dsn(url: str) -> str:
    """A plain asyncpg DSN for the server's maintenance database."""
    parsed = make_url(url).set(drivername="postgresql", database="postgres")
    return parsed.render_as_string(hide_password=False)


async def _pg_admin(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_admin_dsn(url), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_pg_database(prefix: str) -> str:
    """A new empty database on the test server; returns its SQLAlchemy URL."""
    assert PG_URL
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(PG_URL, f'CREATE DATABASE "{name}"'))
    return (
        make_url(PG_URL)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )


def drop_pg_database(url: str) -> None:
    assert PG_URL
    name = make_url(url).database
    asyncio.run(_pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def fresh_database_url(backend: str, tmp_dir: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_dir / f'ws-{uuid.uuid4().hex[:8]}.db'}"
    return create_pg_database("worksession_test")


def discard_database_url(url: str) -> None:
    if url.startswith("postgresql"):
        drop_pg_database(url)


@pytest.fixture(scope="session", params=BACKENDS)
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One migrated database per backend for the whole run."""
    url = fresh_database_url(request.param, tmp_path_factory.mktemp("db"))
    migrate.upgrade(url)
    yield url
    discard_database_url(url)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """The run's database, emptied after each test so tests never see each other's rows."""
    database = Database(db_url)
    try:
        yield database
    finally:
        await _empty_all_tables(database)
        await database.dispose()


async def _empty_all_tables(database: Database) -> None:
    tables = list(reversed(Base.metadata.sorted_tables))
    async with database.transaction() as session:
        if database.dialect == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            await session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await session.execute(table.delete())
