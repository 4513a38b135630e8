"""The scheduled jobs while the database cannot be reached: each run is skipped with one
warning line (no traceback a second), and the next run after the database is back works.

The databases here are really unreachable: a SQLite file in a directory that does not
exist yet, a PostgreSQL port nothing listens on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from worksession import migrate
from worksession.config import Settings
from worksession.kit.broker import MemoryBroker
from worksession.kit.db import Database
from worksession.kit.leader import SoleLeader
from worksession.lifespan import build_pipeline
from worksession.scheduler import Jobs

SKIPPED = "job skipped, database unavailable"


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def jobs_on(url: str) -> AsyncIterator[Jobs]:
    settings = Settings(env="test", database_url=url)
    db = Database(url)
    broker = MemoryBroker()
    pipeline = build_pipeline(settings, db, broker)
    try:
        yield Jobs(settings, db, pipeline, broker, SoleLeader())
    finally:
        await pipeline.store.dispose()
        await db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Jobs]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'not-yet' / 'ws.db'}"
    else:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/worksession"
    async for jobs in jobs_on(url):
        yield jobs


async def test_every_job_skips_its_run_with_one_warning(
    unreachable: Jobs, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="worksession.scheduler"):
        assert await unreachable.distance_tick() == 0
        assert await unreachable.expire_offers() is None
        assert await unreachable.sweep() == 0
        assert await unreachable.cancel_abandoned() == 0
    skipped = [r for r in caplog.records if r.name == "worksession.scheduler"]
    assert [r.getMessage().split(":")[0] for r in skipped] == [SKIPPED] * 4
    assert all(r.exc_info is None for r in skipped)  # a line, not a traceback


async def test_the_run_after_the_database_is_back_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "later" / "ws.db"
    url = f"sqlite+aiosqlite:///{path}"
    async for jobs in jobs_on(url):
        with caplog.at_level(logging.WARNING, logger="worksession.scheduler"):
            assert await jobs.sweep() == 0
        assert [r.getMessage().split(":")[0] for r in caplog.records] == [SKIPPED]
        caplog.clear()

        path.parent.mkdir()
        await asyncio.to_thread(migrate.upgrade, url)

        with caplog.at_level(logging.INFO, logger="worksession.scheduler"):
            assert await jobs.sweep() == 0
            assert await jobs.distance_tick() == 0
        assert [r.getMessage().split(";")[0] for r in caplog.records] == [
            "swept 0 messages, 0 events"
        ]
