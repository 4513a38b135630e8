"""Two workers on one PostgreSQL database and one Redis, for tests that must cross them.

Built on ``tests.scaleout.conftest.start_cluster``; only on PostgreSQL + Redis (CI sets
both), and skipped with that reason elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import REDIS_URL
from tests.scaleout.conftest import (
    Cluster,
    needs_postgresql_and_redis,
    start_cluster,
    stop_cluster,
)

__all__ = ["Cluster", "needs_postgresql_and_redis", "two_workers_running"]


@contextmanager
def two_workers_running(log_dir: Path, **overrides: str) -> Iterator[Cluster]:
    """Servers ``a`` and ``b`` with the test defaults of ``start_server`` (no distance
    ticks) and ``overrides``."""
    assert REDIS_URL
    running = start_cluster(log_dir, REDIS_URL, **overrides)
    try:
        yield running
    finally:
        stop_cluster(running)
    for server in running.servers:
        assert "Traceback" not in server.log(), server.log()
