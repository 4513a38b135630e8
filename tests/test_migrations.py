"""The Alembic migrations build, tear down and rebuild the schema on every backend."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
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
                        with warnings.catch_warnings():
                            # SQLite's reflection cannot read an index on an expression
                            # (the sweep's ix_work_sessions_to_erase); PostgreSQL's compares
                            # it, and test_retention checks that SQLite's serves the sweep.
                            for skipped in (
                                "Skipped unsupported reflection of expression-based",
                                "autogenerate skipping metadata-specified expression-based",
                            ):
                                warnings.filterwarnings("ignore", skipped)
                            return list(compare_metadata(context, Base.metadata))

                    return await connection.run_sync(compare)
            finally:
                await engine.dispose()

        assert asyncio.run(diff()) == []
    finally:
        discard_database_url(url)


def _execute(url: str, *statements: str, **params: object) -> list[list[tuple[object, ...]]]:
    """Run ``statements`` in one transaction; the rows of each (empty when it returns none)."""

    async def run() -> list[list[tuple[object, ...]]]:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                results = []
                for statement in statements:
                    result = await connection.execute(text(statement), params)
                    results.append([tuple(r) for r in result] if result.returns_rows else [])
                return results
        finally:
            await engine.dispose()

    return asyncio.run(run())


_COUNTS = (
    "SELECT count(*) FROM chat_messages",
    "SELECT count(*) FROM session_events",
    "SELECT count(*) FROM work_sessions",
)
_REVIVE = "UPDATE work_sessions SET connection_state = 'active' WHERE id = 1"


@pytest.mark.parametrize("backend", BACKENDS)
def test_0003_keeps_the_data_both_ways(backend: str, tmp_path: Path) -> None:
    """0003 and its downgrade change work_sessions in place: a rebuild of the table would
    take the chat with it (ON DELETE CASCADE), on SQLite silently."""
    from sqlalchemy.exc import IntegrityError

    url = fresh_database_url(backend, tmp_path)
    try:
        migrate.upgrade(url, "0002")
        _execute(
            url,
            "INSERT INTO work_orders (id, seeker_id, status, details, offer_expires_at,"
            " created_at, updated_at) VALUES (1, 's1', 'completed', '{}', CURRENT_TIMESTAMP,"
            " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            "INSERT INTO work_sessions (id, session_id, work_order_id, seeker_id, provider_id,"
            " connection_state, last_seq, completed_at, created_at, updated_at) VALUES (1, :sid,"
            " 1, 's1', 'p1', 'completed', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP,"
            " CURRENT_TIMESTAMP)",
            "INSERT INTO chat_messages (message_id, session_id, sender_id, sender_type,"
            " message_text, delivery_status, created_at, updated_at) VALUES (:mid, 1, 's1',"
            " 'seeker', 'hello', 'sent', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            "INSERT INTO session_events (session_id, seq, kind, data, created_at)"
            " VALUES (1, 1, 'work_accepted', '{}', CURRENT_TIMESTAMP)",
            sid=uuid.uuid4().hex,
            mid=uuid.uuid4().hex,
        )

        migrate.upgrade(url)
        assert _execute(url, *_COUNTS) == [[(1,)]] * 3
        with pytest.raises(IntegrityError, match="ck_work_sessions_ended_stays_ended"):
            _execute(url, _REVIVE)

        migrate.downgrade(url, "0002")
        assert _execute(url, *_COUNTS) == [[(1,)]] * 3
        _execute(url, _REVIVE)  # the trigger left with its revision
        _execute(url, "UPDATE work_sessions SET connection_state = 'completed' WHERE id = 1")

        migrate.upgrade(url)
        assert _execute(url, *_COUNTS) == [[(1,)]] * 3
    finally:
        discard_database_url(url)


_ORDER = (
    "INSERT INTO work_orders (id, seeker_id, status, details, offer_expires_at, created_at,"
    " updated_at) VALUES (:id, 's1', :status, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP,"
    " CURRENT_TIMESTAMP)"
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_0006_allows_withdrawn_and_keeps_the_data_both_ways(backend: str, tmp_path: Path) -> None:
    """0006 widens the order status CHECK in place (on SQLite by editing the table's text:
    a rebuild would drop the offers with the table, ON DELETE CASCADE), and its downgrade
    turns withdrawn orders into expired ones before narrowing it back."""
    from sqlalchemy.exc import IntegrityError

    url = fresh_database_url(backend, tmp_path)
    try:
        migrate.upgrade(url, "0005")
        _execute(
            url,
            _ORDER,
            "INSERT INTO work_offers (work_order_id, provider_id, status, created_at, updated_at)"
            " VALUES (1, 'p1', 'offered', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            id=1,
            status="pending",
        )
        with pytest.raises(IntegrityError, match="ck_work_orders_status"):
            _execute(url, _ORDER, id=2, status="withdrawn")

        migrate.upgrade(url)
        _execute(url, _ORDER, id=2, status="withdrawn")
        with pytest.raises(IntegrityError, match="ck_work_orders_status"):
            _execute(url, _ORDER, id=3, status="withheld")
        offers = "SELECT count(*) FROM work_offers"
        statuses = "SELECT id, status FROM work_orders ORDER BY id"
        assert _execute(url, offers, statuses) == [[(1,)], [(1, "pending"), (2, "withdrawn")]]

        migrate.downgrade(url, "0005")
        assert _execute(url, offers, statuses) == [[(1,)], [(1, "pending"), (2, "expired")]]
        with pytest.raises(IntegrityError, match="ck_work_orders_status"):
            _execute(url, "UPDATE work_orders SET status = 'withdrawn' WHERE id = 2")

        migrate.upgrade(url)
        _execute(url, "UPDATE work_orders SET status = 'withdrawn' WHERE id = 2")
    finally:
        discard_database_url(url)
