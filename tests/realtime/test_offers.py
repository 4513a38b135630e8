"""Section 4: work offers, first accept wins, declines, expiry and busy users."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack

import pytest
from sqlalchemy import func, select

from tests.realtime.conftest import (
    Client,
    Server,
    dedicated_server,
    live_session,
    open_client,
    uid,
)
from worksession.availability.lookup import get_availability
from worksession.kit.db import Database
from worksession.models import WorkOrder, WorkSession


@pytest.fixture(scope="session")
def quick_offers_server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with dedicated_server(
        db_url, tmp_path_factory.mktemp("quick_offers_server"), offer_ttl_s="1"
    ) as running:
        yield running


async def test_every_connected_offered_provider_gets_the_request(server: Server) -> None:
    seeker, providers = uid("seeker"), [uid("provider") for _ in range(3)]
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(open_client(server, "provider", p)) for p in providers
        ]
        outsider = await stack.enter_async_context(open_client(server, "provider", uid("provider")))
        order = await server.create_order(
            seeker_id=seeker, provider_ids=providers, details={"task": "fix tap"}
        )
        for client in clients:
            request = await client.expect("work_request", work_id=order["work_id"])
            assert request["details"] == {"task": "fix tap"}
            assert request["seeker_location"] is None
        await outsider.nothing_more()


async def test_accept_creates_the_session_and_tells_everyone(server: Server, db: Database) -> None:
    seeker_id, winner_id, other_id = uid("seeker"), uid("provider"), uid("provider")
    async with (
        open_client(server, "seeker", seeker_id) as seeker,
        open_client(server, "provider", winner_id) as winner,
        open_client(server, "provider", other_id) as other,
    ):
        order = await server.create_order(seeker_id=seeker_id, provider_ids=[winner_id, other_id])
        work_id = order["work_id"]
        await winner.expect("work_request")
        await other.expect("work_request")
        accepted = await winner.request(
            {"type": "work_response", "work_id": work_id, "accepted": True, "request_id": "acc"},
            "work_accepted",
        )
        seeker_view = await seeker.expect("work_accepted")
        await other.expect("work_unavailable", work_id=work_id)
    assert accepted["request_id"] == "acc"
    assert (accepted["seq"], accepted["connection_state"]) == (1, "waiting")
    assert seeker_view == {k: v for k, v in accepted.items() if k != "request_id"}
    async with db.transaction() as s:
        order_status = (
            await s.execute(select(WorkOrder.status).where(WorkOrder.id == work_id))
        ).scalar_one()
        provider_availability = await get_availability(s, winner_id)
        seeker_availability = await get_availability(s, seeker_id)
    assert order_status == "accepted"
    assert provider_availability.provider_active is False
    assert seeker_availability.seeker_searching is False


async def test_eight_providers_accept_at_once_one_wins(server: Server, db: Database) -> None:
    seeker_id = uid("seeker")
    provider_ids = [uid("provider") for _ in range(8)]
    async with AsyncExitStack() as stack:
        clients: list[Client] = [
            await stack.enter_async_context(open_client(server, "provider", p))
            for p in provider_ids
        ]
        order = await server.create_order(seeker_id=seeker_id, provider_ids=provider_ids)
        work_id = order["work_id"]
        for client in clients:
            await client.expect("work_request", work_id=work_id)
        await asyncio.gather(
            *(
                c.send({"type": "work_response", "work_id": work_id, "accepted": True})
                for c in clients
            )
        )

        async def outcome(client: Client) -> str:
            while True:
                frame = await client.recv()
                if frame["type"] == "work_accepted":
                    return "accepted"
                if frame["type"] == "error":
                    assert frame["code"] == "work_unavailable", frame
                    return "unavailable"

        outcomes = await asyncio.gather(*(outcome(c) for c in clients))
    assert sorted(outcomes) == ["accepted"] + ["unavailable"] * 7
    async with db.transaction() as s:
        sessions = (
            await s.execute(
                select(func.count())
                .select_from(WorkSession)
                .where(WorkSession.work_order_id == work_id)
            )
        ).scalar_one()
    assert sessions == 1


async def test_decline_then_all_declined_rejects_the_order(server: Server) -> None:
    seeker_id, p1, p2 = uid("seeker"), uid("provider"), uid("provider")
    async with (
        open_client(server, "seeker", seeker_id) as seeker,
        open_client(server, "provider", p1) as one,
        open_client(server, "provider", p2) as two,
    ):
        order = await server.create_order(seeker_id=seeker_id, provider_ids=[p1, p2])
        work_id = order["work_id"]
        declined = await one.request(
            {"type": "work_response", "work_id": work_id, "accepted": False, "request_id": "d1"},
            "work_declined",
        )
        assert declined == {"type": "work_declined", "work_id": work_id, "request_id": "d1"}
        await seeker.nothing_more()
        await two.request(
            {"type": "work_response", "work_id": work_id, "accepted": False}, "work_declined"
        )
        await seeker.expect("work_rejected", work_id=work_id)
        error = await one.request(
            {"type": "work_response", "work_id": work_id, "accepted": True}, "error"
        )
        assert error["code"] == "work_unavailable"


async def test_work_not_offered_to_you_is_not_found(server: Server) -> None:
    order = await server.create_order(seeker_id=uid("seeker"), provider_ids=[uid("provider")])
    async with open_client(server, "provider", uid("provider")) as stranger:
        for work_id in (order["work_id"], 2**31):
            error = await stranger.request(
                {"type": "work_response", "work_id": work_id, "accepted": True}, "error"
            )
            assert error["code"] == "work_not_found"


async def test_unanswered_offer_expires(quick_offers_server: Server) -> None:
    seeker_id, provider_id = uid("seeker"), uid("provider")
    async with (
        open_client(quick_offers_server, "seeker", seeker_id) as seeker,
        open_client(quick_offers_server, "provider", provider_id) as provider,
    ):
        order = await quick_offers_server.create_order(
            seeker_id=seeker_id, provider_ids=[provider_id]
        )
        await provider.expect("work_request", work_id=order["work_id"])
        await seeker.expect("work_expired", work_id=order["work_id"], timeout=4)
        await provider.expect("work_unavailable", work_id=order["work_id"])
        error = await provider.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True}, "error"
        )
    assert error["code"] == "work_unavailable"


async def test_a_busy_provider_is_skipped_and_gets_no_work_request(server: Server) -> None:
    """1.1: a provider in a live session is not offered new work (v1.0 offered it, and the
    accept was refused with provider_busy)."""
    free_id = uid("provider")
    async with live_session(server) as pair, open_client(server, "provider", free_id) as free:
        order = await server.create_order(
            seeker_id=uid("seeker"), provider_ids=[pair.provider_id, free_id]
        )
        assert order["offered_to"] == [free_id]
        assert order["skipped"] == [{"provider_id": pair.provider_id, "reason": "busy"}]
        await free.expect("work_request", work_id=order["work_id"])
        await pair.provider.nothing_more()
        error = await pair.provider.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True}, "error"
        )
    assert error["code"] == "work_not_found"


async def test_an_inactive_provider_gets_no_work_request(server: Server) -> None:
    off, on = uid("provider"), uid("provider")
    await server.set_provider_active(off, False)
    async with (
        open_client(server, "provider", off) as inactive,
        open_client(server, "provider", on) as active,
    ):
        order = await server.create_order(seeker_id=uid("seeker"), provider_ids=[off, on])
        assert order["skipped"] == [{"provider_id": off, "reason": "inactive"}]
        await active.expect("work_request", work_id=order["work_id"])
        await inactive.nothing_more()
        refused = await server.post_order(seeker_id=uid("seeker"), provider_ids=[off])
        assert refused.status_code == 409
        assert refused.json()["code"] == "no_provider_available"
        await server.set_provider_active(off, True)
        again = await server.create_order(seeker_id=uid("seeker"), provider_ids=[off])
        await inactive.expect("work_request", work_id=again["work_id"])


async def test_a_seeker_with_a_live_session_cannot_post_an_order(server: Server) -> None:
    """1.1: refused at creation (v1.0 stored it, and every accept was seeker_busy)."""
    provider_id = uid("provider")
    async with live_session(server) as pair, open_client(server, "provider", provider_id) as p:
        response = await server.post_order(seeker_id=pair.seeker_id, provider_ids=[provider_id])
        assert response.status_code == 409
        assert response.json()["code"] == "seeker_busy"
        await p.nothing_more()
