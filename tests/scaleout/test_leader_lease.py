"""The leader lease on a real Redis: a leader whose renewal does not come back in time stops
leading by its own clock, before Redis hands the key to another worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.conftest import REDIS_URL
from worksession.kit.leader import LEASE_SAFETY, RedisLease

pytestmark = pytest.mark.skipif(
    not REDIS_URL, reason="needs WORKSESSION_TEST_REDIS_URL (a Redis server; CI sets it)"
)

TTL_S = 1.0


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    assert REDIS_URL
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_leader_without_a_renewal_stops_before_the_key_expires(redis: Redis) -> None:
    key = f"test-leader-{uuid.uuid4().hex[:8]}"
    first, second = RedisLease(redis, key, TTL_S), RedisLease(redis, key, TTL_S)
    try:
        asked = time.monotonic()
        assert await first.refresh()
        assert not await second.refresh()

        # No renewal from here on: what a renewal hanging on the network looks like from
        # the leader's side. At 80 % of the TTL by its own clock it stops, while Redis may
        # still hold its key.
        await asyncio.sleep(max(0.0, asked + TTL_S * LEASE_SAFETY - time.monotonic()) + 0.02)
        assert not first.is_leader

        # Once Redis lets the key go, the other worker takes over; at no point do both lead.
        deadline = time.monotonic() + 3 * TTL_S
        while not await second.refresh():
            assert not first.is_leader
            assert time.monotonic() < deadline, "the key never expired"
            await asyncio.sleep(0.05)
        assert second.is_leader
        assert not first.is_leader
    finally:
        await second.release()
        await redis.delete(key)


async def test_a_leader_that_renews_keeps_leading(redis: Redis) -> None:
    key = f"test-leader-{uuid.uuid4().hex[:8]}"
    lease = RedisLease(redis, key, TTL_S)
    try:
        assert await lease.refresh()
        for _ in range(6):  # 1.5 s in all: past the first lease's own-clock bound
            await asyncio.sleep(TTL_S / 4)
            assert await lease.refresh()
            assert lease.is_leader
    finally:
        await lease.release()
    assert not await redis.exists(key)
