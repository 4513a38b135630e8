"""The Alembic migrations build, tear down and rebuild the schema on every backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from tests.conftest import BACKENDS, discard_database_url, fresh_database_url
from worksession import migrate
from worksession.kit.db import create_engine
from worksession.models import Base


def _table_names(url: str) -> set[str]:
    async def run() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:

                def names(sync: Connection) -> set[str]:
                    return set(inspect(sync).get_table_names())

                return await connection.run_sync(names)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_downgrade_upgrade(backend: str, tmp_path: Path) -> None:
    url = fresh_database_url(backend, tmp_path)
    try:
        expected = set(Base.metadata.tables) | {"alembic_version"}
        migrate.upgrade(url)
        assert _table_names(url) == expected
        assert migrate.current_revision(url) == migrate.current_head()

        migrate.downgrade(url, "base")
        assert _table_names(url) == {"alembic_version"}
        assert migrate.current_revision(url) is None

        migrate.upgrade(url)
        assert _table_names(url) == expected
    finally:
        discard_database_url(url)


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrations_match_the_models(backend: str, tmp_path: Path) -> None:
    """Autogenerate against a migrated database finds nothing to do: models and
    migrations describe the same schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = fresh_database_url(backend, tmp_path)
    try:
        migrate.upgrade(url)

        async def diff() -> list[object]:
            engine = create_engine(url)
            try:
                async with engine.connect() as connection:

                    def compare(sync: Connection) -> list[object]:
                        context = MigrationContext.configure(sync, opts={"compare_type": True})
                        return list(compare_metadata(context, Base.metadata))

                    return await connection.run_sync(compare)
            finally:
                await engine.dispose()

        assert asyncio.run(diff()) == []
    finally:
        discard_database_url(url)
