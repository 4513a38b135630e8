"""``RedisBroker.count_online``, which presence reads: members of living workers only, many
groups in one call, and a member joined again keeping its place."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.conftest import REDIS_URL
from tests.realtime.conftest import uid
from tests.realtime.two_workers import needs_postgresql_and_redis
from worksession.kit.redis_broker import RedisBroker

pytestmark = needs_postgresql_and_redis


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    assert REDIS_URL
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    raw = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in raw.scan_iter(match=f"{name}:*")]
    if keys:
        await raw.delete(*keys)
    await raw.aclose()


async def _started(prefix: str) -> RedisBroker:
    assert REDIS_URL
    broker = RedisBroker(REDIS_URL, prefix=prefix)
    await broker.start(lambda _channel, _payload: None)
    return broker


async def test_counts_are_of_living_workers_members(prefix: str) -> None:
    a, b = await _started(prefix), await _started(prefix)
    provider, seeker, nobody = uid("ws:provider:p"), uid("ws:seeker:s"), uid("ws:seeker:n")
    try:
        await b.join(provider, "socket-1", 5)
        await b.join(provider, "socket-2", 5)
        await a.join(seeker, "socket-3", 5)
        assert await a.count_online([provider, seeker, nobody]) == {
            provider: 2,
            seeker: 1,
            nobody: 0,
        }
        await b.leave(provider, "socket-2")
        assert await a.count_online([provider]) == {provider: 1}
        # A worker that stopped without leaving (its liveness key gone, as after SIGKILL).
        await b.client.delete(f"{prefix}:_alive:{b._worker}")
        assert await a.count_online([provider, seeker]) == {provider: 0, seeker: 1}
        assert await a.count_online([]) == {}
    finally:
        await a.close()
        await b.close()


async def test_joining_again_keeps_the_place(prefix: str) -> None:
    """After an outage a worker joins its sockets again: the oldest stays the oldest."""
    broker = await _started(prefix)
    evicted: list[str] = []
    broker.watch_groups(evicted.append, lambda _group, _workers: None)
    group = uid("ws:seeker:s")
    try:
        for i in range(5):
            await broker.join(group, f"socket-{i}", 5)
        await broker.join(group, "socket-0", 5)  # again
        assert evicted == []
        await broker.join(group, "socket-5", 5)
        assert evicted == ["socket-0"]
    finally:
        await broker.close()
