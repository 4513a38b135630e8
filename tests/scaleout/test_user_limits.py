"""Issue 12, finding 5: what one user may take, counted over all their sockets and workers
(PROTOCOL 2, 3 and 7, *1.1*)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack

import httpx
import pytest
import redis.asyncio as aioredis

from tests.conftest import REDIS_URL
from tests.realtime.conftest import Client, Server, open_client, uid
from tests.realtime.two_workers import Cluster, needs_postgresql_and_redis, two_workers_running
from worksession.kit.redis_broker import RedisBroker

pytestmark = needs_postgresql_and_redis


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two workers at the contract's defaults; each test uses users of its own."""
    with two_workers_running(tmp_path_factory.mktemp("limits")) as running:
        yield running


async def _open(stack: AsyncExitStack, server: Server, user_id: str) -> Client:
    return await stack.enter_async_context(open_client(server, "seeker", user_id))


async def _still_open(client: Client) -> None:
    await client.request({"type": "ping"}, "pong")


async def test_a_sixth_socket_closes_the_oldest_wherever_it_is(workers: Cluster) -> None:
    user = uid("seeker")
    async with AsyncExitStack() as stack:
        # 3 on one worker, 2 on the other: five, the most a user may hold.
        sockets = [
            await _open(stack, server, user)
            for server in (workers.a, workers.b, workers.a, workers.b, workers.a)
        ]
        for client in sockets:
            await _still_open(client)

        sixth = await _open(stack, workers.b, user)
        assert await sockets[0].closed_with() == 4409  # the oldest, on the other worker
        for client in (*sockets[1:], sixth):
            await _still_open(client)

        seventh = await _open(stack, workers.a, user)
        assert await sockets[1].closed_with() == 4409  # the next oldest, on worker b
        for client in (*sockets[2:], sixth, seventh):
            await _still_open(client)


async def test_another_users_sockets_do_not_count(workers: Cluster) -> None:
    seeker = uid("seeker")
    async with AsyncExitStack() as stack:
        mine = [await _open(stack, workers.a, seeker) for _ in range(5)]
        # The same user id in the other role is another user (another channel).
        for _ in range(5):
            await stack.enter_async_context(open_client(workers.b, "provider", seeker))
        for client in mine:
            await _still_open(client)


async def test_a_dead_workers_sockets_stop_counting() -> None:
    """A worker that crashed never said its sockets closed; once its liveness key has run
    out, its entries neither count towards the cap nor get evict messages."""
    assert REDIS_URL
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    group = f"seeker:{uid('seeker')}"
    evicted: list[str] = []
    broker = RedisBroker(REDIS_URL, prefix=prefix)
    broker.watch_groups(evicted.append, lambda _group, _workers: None)
    raw = aioredis.Redis.from_url(REDIS_URL)
    try:
        await broker.start(lambda _channel, _payload: None)
        await raw.zadd(f"{prefix}:_group:{group}", {f"crashed|socket-{i}": i for i in range(1, 6)})
        for i in range(5):
            assert await broker.join(group, f"live-{i}", 5) == 1
        assert evicted == []
        members = await raw.zrange(f"{prefix}:_group:{group}", 0, -1)
        assert sorted(m.decode().split("|")[1] for m in members) == [f"live-{i}" for i in range(5)]
        assert await broker.join(group, "live-5", 5) == 1
        assert evicted == ["live-0"]
    finally:
        await broker.close()
        await raw.delete(f"{prefix}:_group:{group}")
        await raw.aclose()


async def _burst(client: Client, frames: int) -> None:
    for i in range(frames):
        await client.send({"type": "ping", "request_id": f"p{i}"})


async def _answers(client: Client, frames: int) -> list[dict[str, object]]:
    """The answer to each of ``frames`` pings: a pong or an error."""
    got: list[dict[str, object]] = []
    while len(got) < frames:
        frame = await client.recv(timeout=15)
        if frame["type"] in ("pong", "error"):
            got.append(frame)
    return got


async def test_the_frame_budget_is_the_users_over_all_sockets_and_workers(
    workers: Cluster,
) -> None:
    """Four sockets, two on each worker, each sending a burst of 40: every socket is within
    its own limit (bursts of 40), the user is not (bursts of 80, 40 a second)."""
    user = uid("seeker")
    async with AsyncExitStack() as stack:
        sockets = [
            await _open(stack, server, user)
            for server in (workers.a, workers.b, workers.a, workers.b)
        ]
        await asyncio.sleep(0.5)  # each worker hears that the user is on two workers
        started = time.monotonic()
        await asyncio.gather(*(_burst(client, 40) for client in sockets))
        answers = await asyncio.gather(*(_answers(client, 40) for client in sockets))
        elapsed = time.monotonic() - started
    flat = [frame for answered in answers for frame in answered]
    pongs = sum(1 for frame in flat if frame["type"] == "pong")
    limited = [frame for frame in flat if frame.get("code") == "rate_limited"]
    assert len(flat) == 160
    assert limited, "160 frames in a burst from one user, and not one rate_limited"
    assert all(isinstance(f["retry_after_ms"], int) and f["retry_after_ms"] >= 1 for f in limited)
    # The burst plus what trickled back while the frames were being answered.
    assert pongs <= 80 + 40 * elapsed, (pongs, elapsed)


async def _rest(server: Server, token: str, requests: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        return [
            await http.get("/v1/me/session", headers={"Authorization": f"Bearer {token}"})
            for _ in range(requests)
        ]


async def test_the_rest_limit_is_the_participants_over_all_workers(workers: Cluster) -> None:
    user = uid("seeker")
    token = workers.a.token(user, "seeker")
    started = time.monotonic()
    answered = await asyncio.gather(_rest(workers.a, token, 20), _rest(workers.b, token, 20))
    elapsed = time.monotonic() - started
    responses = [r for batch in answered for r in batch]
    served = [r for r in responses if r.status_code != 429]
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.status_code == 404 for r in served)  # no live session: the request ran
    assert refused, "40 requests from one participant, and not one 429"
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert len(served) <= 20 + 10 * elapsed, (len(served), elapsed)

    # Another participant is not held back by this one.
    other = await _rest(workers.b, workers.b.token(uid("provider"), "provider"), 1)
    assert other[0].status_code == 404
