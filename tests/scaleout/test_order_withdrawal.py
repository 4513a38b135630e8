"""*1.1* Withdrawing orders with two worker processes on one PostgreSQL and one Redis: a
withdrawal racing an accept ends one way only, settled by the database, and a seeker who was
away when their order expired learns it from ``GET /v1/me/work-orders`` and finds nothing
stale in ``connected.open_orders``."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.realtime.conftest import Client, Server, open_client, uid
from tests.realtime.two_workers import Cluster, needs_postgresql_and_redis, two_workers_running
from worksession.kit.db import Database
from worksession.models import WorkOffer, WorkOrder, WorkSession

pytestmark = needs_postgresql_and_redis

ROUNDS = 20


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Offers lapse after 3 s: long enough for a round of the race, short enough to wait for.
    with two_workers_running(tmp_path_factory.mktemp("withdrawal"), offer_ttl_s="3") as running:
        yield running


async def _answer_to(client: Client, request_id: str) -> dict[str, Any]:
    """The frame answering ``request_id`` (other frames stay pending)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        for i, frame in enumerate(client._pending):
            if frame.get("request_id") == request_id:
                return client._pending.pop(i)
        remaining = deadline - asyncio.get_running_loop().time()
        assert remaining > 0, f"no answer to {request_id}; got {client._pending}"
        client._pending.append(await client._read(remaining))


async def _order_rows(database_url: str, work_id: int) -> tuple[str, int, list[str]]:
    database = Database(database_url)
    try:
        async with database.transaction() as s:
            status = (
                await s.execute(select(WorkOrder.status).where(WorkOrder.id == work_id))
            ).scalar_one()
            sessions = (
                await s.execute(
                    select(func.count())
                    .select_from(WorkSession)
                    .where(WorkSession.work_order_id == work_id)
                )
            ).scalar_one()
            offers = (
                await s.execute(select(WorkOffer.status).where(WorkOffer.work_order_id == work_id))
            ).scalars()
            return status, sessions, list(offers)
    finally:
        await database.dispose()


async def test_cancel_work_racing_an_accept_ends_one_way_only(two_workers: Cluster) -> None:
    outcomes: Counter[str] = Counter()
    for round_ in range(ROUNDS):
        # Each round on fresh users (an accepted round leaves both in a live session), the
        # seeker on one worker and the provider on the other, in turn.
        seeker_on, provider_on = (
            (two_workers.a, two_workers.b) if round_ % 2 else (two_workers.b, two_workers.a)
        )
        seeker_id, provider_id = uid("seeker"), uid("provider")
        async with (
            open_client(seeker_on, "seeker", seeker_id) as seeker,
            open_client(provider_on, "provider", provider_id) as provider,
        ):
            order = await seeker_on.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
            work_id = order["work_id"]
            await provider.expect("work_request", work_id=work_id)

            await asyncio.gather(
                seeker.send({"type": "cancel_work", "work_id": work_id, "request_id": "c"}),
                provider.send(
                    {
                        "type": "work_response",
                        "work_id": work_id,
                        "accepted": True,
                        "request_id": "a",
                    }
                ),
            )
            cancelled = await _answer_to(seeker, "c")
            accepted = await _answer_to(provider, "a")
            status, sessions, offers = await _order_rows(two_workers.database_url, work_id)

            if cancelled["type"] == "work_withdrawn":
                assert accepted["type"] == "error", accepted
                assert accepted["code"] == "work_unavailable", accepted
                assert (status, sessions, offers) == ("withdrawn", 0, ["withdrawn"])
                # The provider was still offered when the withdrawal committed.
                await provider.expect("work_unavailable", work_id=work_id)
                outcomes["withdrawn"] += 1
            else:
                assert (cancelled["type"], cancelled["code"]) == ("error", "work_unavailable")
                assert accepted["type"] == "work_accepted", accepted
                assert (status, sessions, offers) == ("accepted", 1, ["accepted"])
                await seeker.expect("work_accepted", work_id=work_id)
                outcomes["accepted"] += 1
            # Nothing of the other outcome follows.
            frames = await seeker.drain(0.2) + await provider.drain(0.2)
            assert not [f for f in frames if f["type"] in ("work_withdrawn", "work_accepted")]
    assert sum(outcomes.values()) == ROUNDS
    print(f"cancel_work vs accept over {ROUNDS} rounds: {dict(outcomes)}")


async def _my_orders(server: Server, seeker_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        response = await http.get(
            "/v1/me/work-orders",
            headers={"Authorization": f"Bearer {server.token(seeker_id, 'seeker')}"},
        )
    assert response.status_code == 200, response.text
    orders: list[dict[str, Any]] = response.json()["work_orders"]
    return orders


async def test_a_seeker_away_while_the_order_expired_learns_it_and_sees_nothing_stale(
    two_workers: Cluster,
) -> None:
    seeker_id, provider_id = uid("seeker"), uid("provider")
    async with open_client(two_workers.b, "provider", provider_id) as provider:
        lapsed = await two_workers.a.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        await provider.expect("work_request", work_id=lapsed["work_id"])
        # The leader's expiry job (whichever worker it is) marks the order and tells the
        # provider; nobody tells the seeker, who has no socket.
        await provider.expect("work_unavailable", work_id=lapsed["work_id"], timeout=8)
    deadline = time.monotonic() + 5
    while (await _order_rows(two_workers.database_url, lapsed["work_id"]))[0] != "expired":
        assert time.monotonic() < deadline, "the expiry job did not mark the order"
        await asyncio.sleep(0.1)

    fresh = await two_workers.b.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
    async with open_client(two_workers.b, "seeker", seeker_id, expect_connected=False) as seeker:
        connected = await seeker.recv()
        assert [o["work_id"] for o in connected["open_orders"]] == [fresh["work_id"]]
        # No work_expired replayed for what happened while away: the listing says it.
        await seeker.nothing_more()
    for server in two_workers.servers:
        listed = await _my_orders(server, seeker_id)
        assert [(o["work_id"], o["status"]) for o in listed][1:] == [(lapsed["work_id"], "expired")]
        assert listed[0]["work_id"] == fresh["work_id"]
