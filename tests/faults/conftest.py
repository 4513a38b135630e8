"""Fault tests: the service against a PostgreSQL and a Redis that go away and come back.

Every dependency is reached through a :class:`~tests.faults.proxy.TcpProxy` the test
controls; the machine's servers, which other tests share, are never stopped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, REDIS_URL, create_pg_database, drop_pg_database
from tests.faults.proxy import TcpProxy
from tests.realtime.conftest import Server, start_server, stop_server
from worksession import migrate

ProxyTo = Callable[[str], TcpProxy]

needs_postgresql_and_redis = pytest.mark.skipif(
    not (PG_URL and REDIS_URL), reason="needs PostgreSQL and Redis (CI sets both)"
)


@pytest.fixture
def proxy_to() -> Iterator[ProxyTo]:
    """``proxy_to(url)``: a started proxy to the host and port of ``url`` (a database or
    Redis URL); every proxy made is closed after the test."""
    made: list[TcpProxy] = []

    def make(url: str) -> TcpProxy:
        parsed = make_url(url)
        default_port = 6379 if parsed.drivername.startswith("redis") else 5432
        proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or default_port).start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


@dataclass
class Proxied:
    """Servers whose PostgreSQL (and Redis, when asked) are reached through proxies, one
    proxy per server and dependency, so that one worker's link can fail alone."""

    servers: list[Server]
    database_url: str
    """The database itself, not through the proxy: what the test checks afterwards."""
    pgs: list[TcpProxy]
    redises: list[TcpProxy]
    redis_prefix: str

    @property
    def pg(self) -> TcpProxy:
        [only] = self.pgs
        return only


@asynccontextmanager
async def proxied_servers(
    log_dir: Path,
    proxy_to: ProxyTo,
    *,
    workers: int = 1,
    redis_proxy: bool = False,
    **overrides: str,
) -> AsyncIterator[Proxied]:
    """``workers`` separate ``worksession serve`` processes on a fresh, migrated PostgreSQL
    database and the test Redis (a prefix of their own), PostgreSQL through a proxy, Redis
    through one too if ``redis_proxy``. No traceback may appear in their logs."""
    assert PG_URL
    assert REDIS_URL
    database_url = await asyncio.to_thread(create_pg_database, "worksession_faults")
    servers: list[Server] = []
    try:
        await asyncio.to_thread(migrate.upgrade, database_url)
        prefix = f"faults-{uuid.uuid4().hex[:8]}"
        pgs: list[TcpProxy] = []
        redises: list[TcpProxy] = []
        for _ in range(workers):
            pg = proxy_to(database_url)
            settings = {"redis_url": REDIS_URL, "redis_prefix": prefix, **overrides}
            if redis_proxy:
                redis = proxy_to(REDIS_URL)
                settings["redis_url"] = redis.url_for(REDIS_URL)
                redises.append(redis)
            pgs.append(pg)
            servers.append(
                await asyncio.to_thread(start_server, pg.url_for(database_url), log_dir, **settings)
            )
        yield Proxied(servers, database_url, pgs, redises, prefix)
    finally:
        for server in servers:
            if server.process.poll() is None:
                await asyncio.to_thread(stop_server, server)
        await asyncio.to_thread(drop_pg_database, database_url)
    for server in servers:
        assert "Traceback" not in server.log(), server.log()


def leaders(servers: list[Server]) -> list[Server]:
    """The servers whose log says they took the leader lease and did not lose it since."""
    claims = [
        (s.log().rfind("now runs the periodic jobs"), s.log().rfind("no longer runs"), s)
        for s in servers
    ]
    return [s for took, gave_up, s in claims if took > gave_up]
