"""Redis goes away for 10 s while offers are being accepted on two workers.

Both workers reach Redis through proxies of their own, taken down together (the machine's
Redis is shared with other tests and never stopped). Each order is offered to two
providers, one on each worker, who accept it at the same moment: the database settles the
race with Redis gone, and what Redis carried (the other worker's sockets hearing of it, the
leader lease) comes back after it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from websockets.exceptions import ConnectionClosed

from tests.faults.conftest import ProxyTo, leaders, needs_postgresql_and_redis, proxied_servers
from tests.realtime.conftest import Client, Server, open_client, uid

pytestmark = needs_postgresql_and_redis

ORDERS = 6
"""Half offered before Redis goes, half while it is gone."""
OUTAGE_S = 10.0


@dataclass
class Listener:
    """Every frame a socket receives, read as it comes (a socket nobody reads is closed
    as a slow consumer)."""

    client: Client
    user_id: str
    frames: list[dict[str, Any]] = field(default_factory=list)

    async def run(self) -> None:
        try:
            while True:
                self.frames.append(json.loads(await self.client.ws.recv()))
        except ConnectionClosed:
            return

    def of(self, type_: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            f
            for f in self.frames
            if f.get("type") == type_ and all(f.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(self, type_: str, timeout: float, **fields: Any) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (found := self.of(type_, **fields)):
            assert asyncio.get_running_loop().time() < deadline, (type_, fields, self.frames)
            await asyncio.sleep(0.1)
        return found[0]

    def of_request(self, request_id: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("request_id") == request_id]

    def seqs(self) -> list[tuple[str, int]]:
        return [(f["session_id"], f["seq"]) for f in self.frames if "seq" in f]


@dataclass
class Order:
    seeker: Listener
    providers: tuple[Listener, Listener]
    """On worker a, on worker b."""
    work_id: int = 0


async def _sessions_per_order(database_url: str, work_ids: list[int]) -> dict[int, int]:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT o.id, count(s.id) FROM work_orders o"
            " LEFT JOIN work_sessions s ON s.work_order_id = o.id"
            " WHERE o.id = ANY($1::int4[]) AND o.status = 'accepted' GROUP BY o.id",
            work_ids,
        )
    finally:
        await connection.close()
    return {r[0]: r[1] for r in rows}


async def _accept_race(order: Order) -> None:
    await asyncio.gather(
        *(
            p.client.send(
                {
                    "type": "work_response",
                    "work_id": order.work_id,
                    "accepted": True,
                    "request_id": f"accept-{order.work_id}-{side}",
                }
            )
            for side, p in zip("ab", order.providers, strict=True)
        )
    )


@pytest.mark.timeout(240)  # two server starts and a fixed outage, on a loaded machine
async def test_redis_down_during_accepts_answers_each_once_and_fan_out_resumes(
    tmp_path: Path, proxy_to: ProxyTo
) -> None:
    async with proxied_servers(
        tmp_path, proxy_to, workers=2, redis_proxy=True, leader_ttl_s="3"
    ) as run:
        a, b = run.servers
        async with AsyncExitStack() as stack:

            async def listen(server: Server, role: str) -> Listener:
                user_id = uid(role)
                client = await stack.enter_async_context(open_client(server, role, user_id))
                listener = Listener(client, user_id)
                stack.push_async_callback(_stop, asyncio.create_task(listener.run()))
                return listener

            orders = [
                Order(
                    await listen(a if i % 2 else b, "seeker"),
                    (await listen(a, "provider"), await listen(b, "provider")),
                )
                for i in range(ORDERS)
            ]

            async def offer(order: Order, via: Server) -> None:
                created = await via.create_order(
                    seeker_id=order.seeker.user_id,
                    provider_ids=[p.user_id for p in order.providers],
                )
                order.work_id = created["work_id"]

            early, late = orders[: ORDERS // 2], orders[ORDERS // 2 :]
            for order in early:
                await offer(order, a)
            for order in early:
                for provider in order.providers:
                    await provider.wait_for("work_request", 10, work_id=order.work_id)

            for proxy in run.redises:
                proxy.down()
            loop = asyncio.get_running_loop()
            down_at = loop.time()
            try:
                for i, order in enumerate(late):
                    await offer(order, b if i % 2 else a)
                await asyncio.gather(*(_accept_race(order) for order in orders))
                for order in orders:
                    for side, provider in zip("ab", order.providers, strict=True):
                        await _answered(provider, order, side)
                await asyncio.sleep(max(0.0, OUTAGE_S - (loop.time() - down_at)))
            finally:
                for proxy in run.redises:
                    proxy.up()
            back = [len(server.log()) for server in run.servers]

            # Fan-out resumes: every seeker hears of its session, wherever it was made.
            for order in orders:
                await order.seeker.wait_for("work_accepted", 20, work_id=order.work_id)
            # ... and a message after the outage crosses workers live.
            for order in orders:
                winner = _winner(order)
                session_id = winner.of("work_accepted", work_id=order.work_id)[0]["session_id"]
                await winner.client.send(
                    {"type": "chat_message", "session_id": session_id, "message": "here"}
                )
                await order.seeker.wait_for("chat_message", 15, session_id=session_id)
            await asyncio.sleep(0.5)  # anything repeated would arrive now

        sessions = await _sessions_per_order(run.database_url, [o.work_id for o in orders])
        deadline = loop.time() + 10
        while len(leading := leaders(run.servers)) != 1 and loop.time() < deadline:
            await asyncio.sleep(0.2)
        # Once Redis is back no command to it fails, not even the first one on a pooled
        # connection the outage broke: the lease is renewed, the group counts updated.
        since_back = [
            line
            for server, offset in zip(run.servers, back, strict=True)
            for line in server.log()[offset:].splitlines()
            if "WARNING" in line
        ]

    answers: Counter[str] = Counter()
    for order in orders:
        for side, provider in zip("ab", order.providers, strict=True):
            request_id = f"accept-{order.work_id}-{side}"
            answers[request_id] = len(provider.of_request(request_id))
    print(
        f"orders {len(orders)}, accepts {len(answers)}, answers {sum(answers.values())},"
        f" sessions {sum(sessions.values())}"
    )
    assert set(answers.values()) == {1}, answers
    assert sessions == {o.work_id: 1 for o in orders}, sessions
    for order in orders:
        winners = [p for p in order.providers if p.of("work_accepted", work_id=order.work_id)]
        assert len(winners) == 1
        side = "ab"[1 - order.providers.index(winners[0])]
        [refused] = order.providers[1 - order.providers.index(winners[0])].of(
            "error", request_id=f"accept-{order.work_id}-{side}"
        )
        assert refused["code"] == "work_unavailable", refused
        for listener in (order.seeker, *order.providers):
            seen = listener.seqs()
            assert len(seen) == len(set(seen)), f"an event delivered twice: {seen}"
        assert len(order.seeker.of("work_accepted", work_id=order.work_id)) == 1
        assert len(winners[0].of("work_accepted", work_id=order.work_id)) == 1
    assert len(leading) == 1, "no single leader after Redis came back"
    assert not since_back, since_back


def _winner(order: Order) -> Listener:
    [winner] = [p for p in order.providers if p.of("work_accepted", work_id=order.work_id)]
    return winner


async def _answered(provider: Listener, order: Order, side: str) -> None:
    request_id = f"accept-{order.work_id}-{side}"
    deadline = asyncio.get_running_loop().time() + 15
    while not provider.of_request(request_id):
        assert asyncio.get_running_loop().time() < deadline, f"{request_id} never answered"
        await asyncio.sleep(0.1)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
