"""Two worker processes on one PostgreSQL database and one Redis: the production shape.

Needs ``WORKSESSION_TEST_DATABASE_URL`` and ``WORKSESSION_TEST_REDIS_URL`` (CI sets both).
Tests that must break Redis get a private ``redis-server`` on a free port instead of the
shared one.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import PG_URL, REDIS_URL, create_pg_database, drop_pg_database
from tests.realtime.conftest import Server, free_port, start_server, stop_server
from worksession import migrate

needs_postgresql_and_redis = pytest.mark.skipif(
    not (PG_URL and REDIS_URL), reason="needs PostgreSQL and Redis (CI sets both)"
)


@dataclass
class PrivateRedis:
    """A throw-away redis-server this test may stop and restart at will."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@dataclass
class Cluster:
    a: Server
    b: Server
    database_url: str
    redis_url: str
    prefix: str

    @property
    def servers(self) -> tuple[Server, Server]:
        return (self.a, self.b)

    def leader(self) -> Server:
        """The worker that last said it took the lease (from its own log)."""
        claims = [
            (s.log().rfind("now runs the periodic jobs"), s.log().rfind("no longer runs"), s)
            for s in self.servers
        ]
        leading = [s for took, gave_up, s in claims if took > gave_up]
        assert len(leading) == 1, [s.base_url for s in leading]
        return leading[0]


def start_cluster(log_dir: Path, redis_url: str, **overrides: str) -> Cluster:
    database_url = create_pg_database("worksession_scaleout")
    migrate.upgrade(database_url)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    settings = {"redis_url": redis_url, "redis_prefix": prefix, **overrides}
    a = start_server(database_url, log_dir, **settings)
    b = start_server(database_url, log_dir, **settings)
    return Cluster(a, b, database_url, redis_url, prefix)


def stop_cluster(cluster: Cluster) -> None:
    for server in cluster.servers:
        if server.process.poll() is None:
            stop_server(server)
    drop_pg_database(cluster.database_url)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    instance = PrivateRedis(port=free_port())
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Two workers on the shared test Redis: 1 s distance ticks, a 3 s leader lease."""
    assert REDIS_URL
    running = start_cluster(tmp_path, REDIS_URL, distance_interval_s="1", leader_ttl_s="3")
    yield running
    stop_cluster(running)
    for server in running.servers:
        assert "Traceback" not in server.log(), server.log()
