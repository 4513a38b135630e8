"""Section 5: mediums, location and distance, and the end of a session."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from tests.realtime.conftest import (
    Pair,
    Server,
    dedicated_server,
    live_session,
    open_client,
    uid,
)
from worksession.availability.lookup import get_availability
from worksession.kit.db import Database
from worksession.models import WorkOrder, WorkSession

# Bengaluru: a seeker at MG Road; offsets in degrees of latitude (~111 m per 0.001).
SEEKER_AT = (12.9756, 77.6066)


def north_of(metres: float) -> tuple[float, float]:
    return (SEEKER_AT[0] + metres / 111_195.0, SEEKER_AT[1])


def location(pair: Pair, point: tuple[float, float], **extra: Any) -> dict[str, Any]:
    return {
        "type": "location_update",
        "session_id": pair.session_id,
        "lat": point[0],
        "lng": point[1],
        **extra,
    }


@pytest.fixture(scope="session")
def ticking_server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with dedicated_server(
        db_url, tmp_path_factory.mktemp("ticking_server"), distance_interval_s="1"
    ) as running:
        yield running


async def test_medium_selection_activates_and_reaches_the_provider(server: Server) -> None:
    async with live_session(server) as pair:
        selected = await pair.seeker.request(
            {
                "type": "medium_selection",
                "session_id": pair.session_id,
                "mediums": {"whatsapp": "+91 98765-43210", "call": "09876543210"},
                "request_id": "m",
            },
            "mediums_selected",
        )
        seen = await pair.provider.expect("seeker_mediums_selected")
        again = await pair.seeker.request(
            {"type": "medium_selection", "session_id": pair.session_id, "mediums": {}},
            "mediums_selected",
        )
        seen_again = await pair.provider.expect("seeker_mediums_selected")
    assert selected == {
        "type": "mediums_selected",
        "session_id": pair.session_id,
        "mediums": {"whatsapp": "9876543210", "call": "9876543210"},
        "connection_state": "active",
        "seq": 2,
        "request_id": "m",
    }
    assert seen == {
        "type": "seeker_mediums_selected",
        "session_id": pair.session_id,
        "mediums": {"whatsapp": "9876543210", "call": "9876543210"},
        "seq": 2,
    }
    assert (again["mediums"], again["seq"], seen_again["mediums"]) == ({}, 3, {})


async def test_provider_shares_mediums(server: Server) -> None:
    async with live_session(server) as pair:
        shared = await pair.provider.request(
            {
                "type": "medium_share",
                "session_id": pair.session_id,
                "mediums": {"telegram": "919123456789"},
            },
            "mediums_shared",
        )
        seen = await pair.seeker.expect("provider_mediums_shared")
    assert shared["mediums"] == seen["mediums"] == {"telegram": "9123456789"}
    assert shared["seq"] == seen["seq"] == 2


async def test_distance_updates_follow_the_50_metre_rule(server: Server) -> None:
    async with live_session(server) as pair:
        await pair.seeker.send(location(pair, SEEKER_AT))
        await pair.seeker.nothing_more()  # one position alone gives no distance
        await pair.provider.send(location(pair, north_of(2000)))
        first = await pair.seeker.expect("distance_update")
        assert first == await pair.provider.expect("distance_update")
        assert first["distance_formatted"] == "2.0 km away"
        assert abs(first["distance_meters"] - 2000) < 1

        await pair.provider.send(location(pair, north_of(1970)))  # 30 m: too little
        await pair.seeker.nothing_more()
        await pair.provider.send(location(pair, north_of(1940)))  # 60 m from the last update
        second = await pair.seeker.expect("distance_update")
        await pair.provider.expect("distance_update")
        assert abs(second["distance_meters"] - 1940) < 1


async def test_noisy_fixes_are_dropped_silently(server: Server) -> None:
    async with live_session(server) as pair:
        await pair.seeker.send(location(pair, SEEKER_AT, recorded_at="2026-01-01T10:00:00Z"))
        await pair.provider.send(location(pair, north_of(1000)))
        await pair.seeker.expect("distance_update")
        await pair.provider.expect("distance_update")
        for noisy in (
            location(pair, north_of(500), accuracy=250.0),  # inaccurate
            location(pair, north_of(500), recorded_at="2026-01-01T09:59:00Z"),  # out of order
            location(pair, north_of(900), recorded_at="2026-01-01T10:00:05Z"),  # 900 m in 5 s
        ):
            await pair.seeker.send(noisy)
        await pair.seeker.nothing_more()
        await pair.provider.nothing_more()


async def test_nearby_and_arrived_fire_once_each(server: Server) -> None:
    async with live_session(server) as pair:
        await pair.seeker.send(location(pair, SEEKER_AT))
        await pair.provider.send(location(pair, north_of(1000)))
        await pair.seeker.expect("distance_update")
        await pair.provider.send(location(pair, north_of(250)))
        nearby = await pair.seeker.expect("provider_nearby")
        assert nearby == await pair.provider.expect("provider_nearby")
        assert nearby["seq"] == 2
        assert 240 < nearby["distance_meters"] < 260
        await pair.provider.send(location(pair, north_of(180)))
        await pair.provider.send(location(pair, north_of(30)))
        arrived = await pair.seeker.expect("provider_arrived")
        assert arrived["seq"] == 3
        await pair.provider.send(location(pair, north_of(200)))
        await pair.provider.send(location(pair, north_of(10)))
        await pair.seeker.drain(0.5)
    types = [f["type"] for f in pair.seeker.received]
    assert types.count("provider_nearby") == 1
    assert types.count("provider_arrived") == 1


async def test_periodic_distance_update_once_per_interval(ticking_server: Server) -> None:
    async with live_session(ticking_server) as pair:
        await pair.seeker.send(location(pair, SEEKER_AT))
        await pair.provider.send(location(pair, north_of(3000)))
        first = await pair.seeker.expect("distance_update")
        later = [f for f in await pair.seeker.drain(3.5) if f["type"] == "distance_update"]
        provider_got = [f for f in await pair.provider.drain(0.1) if f["type"] == "distance_update"]
    ticks = [first, *later]
    # One for the position change, then one a second (the interval), never more.
    assert 3 <= len(ticks) <= 5
    assert len(provider_got) >= len(later)
    assert all(t["distance_formatted"] == "3.0 km away" for t in ticks)


async def test_cancel_tells_both_and_closes_every_socket(server: Server, db: Database) -> None:
    async with (
        live_session(server) as pair,
        open_client(server, "seeker", pair.seeker_id) as second_device,
    ):
        cancelled = await pair.seeker.request(
            {"type": "cancel_connection", "session_id": pair.session_id, "request_id": "c"},
            "connection_cancelled",
        )
        seen = await pair.provider.expect("connection_cancelled")
        also = await second_device.expect("connection_cancelled")
        assert await pair.seeker.closed_with() == 1000
        assert await pair.provider.closed_with() == 1000
        assert await second_device.closed_with() == 1000
    assert cancelled["cancelled_by"] == "seeker"
    assert cancelled["request_id"] == "c"
    assert seen == also == {k: v for k, v in cancelled.items() if k != "request_id"}
    async with db.transaction() as s:
        session = (
            await s.execute(select(WorkSession).where(WorkSession.work_order_id == pair.work_id))
        ).scalar_one()
        order = (
            await s.execute(select(WorkOrder).where(WorkOrder.id == pair.work_id))
        ).scalar_one()
        provider = await get_availability(s, pair.provider_id)
        seeker = await get_availability(s, pair.seeker_id)
    assert (session.connection_state, session.cancelled_by, order.status) == (
        "cancelled",
        "seeker",
        "cancelled",
    )
    assert provider.provider_active is True
    assert seeker.seeker_searching is True


async def test_chat_into_an_ended_session_is_invalid_state(server: Server) -> None:
    async with live_session(server) as pair:
        await pair.provider.request(
            {"type": "complete_session", "session_id": pair.session_id}, "session_completed"
        )
        await pair.seeker.expect("session_completed")
    async with open_client(server, "seeker", pair.seeker_id) as seeker:
        for frame in (
            {"type": "chat_message", "session_id": pair.session_id, "message": "still there?"},
            {"type": "start_chat", "session_id": pair.session_id},
            {"type": "typing_indicator", "session_id": pair.session_id, "is_typing": True},
            {"type": "cancel_connection", "session_id": pair.session_id},
        ):
            error = await seeker.request(frame, "error")
            assert error["code"] == "invalid_state", frame


async def test_complete_by_provider(server: Server, db: Database) -> None:
    async with live_session(server) as pair:
        error = await pair.seeker.request(
            {"type": "complete_session", "session_id": pair.session_id}, "error"
        )
        assert error["code"] == "forbidden"
        done = await pair.provider.request(
            {"type": "complete_session", "session_id": pair.session_id}, "session_completed"
        )
        assert done == {"type": "session_completed", "session_id": pair.session_id, "seq": 2}
        await pair.seeker.expect("session_completed", seq=2)
        assert await pair.seeker.closed_with() == 1000
        assert await pair.provider.closed_with() == 1000
    async with db.transaction() as s:
        seeker = await get_availability(s, pair.seeker_id)
        provider = await get_availability(s, pair.provider_id)
    assert provider.provider_active is True
    assert seeker.seeker_searching is False


async def test_cancel_racing_complete_has_one_outcome(server: Server, db: Database) -> None:
    for _ in range(5):
        async with live_session(server) as pair:
            await asyncio.gather(
                pair.seeker.send({"type": "cancel_connection", "session_id": pair.session_id}),
                pair.provider.send({"type": "complete_session", "session_id": pair.session_id}),
            )
            seeker_end = await pair.seeker.closed_with()
            provider_end = await pair.provider.closed_with()
        assert seeker_end == provider_end == 1000
        told = {
            f["type"]
            for f in pair.seeker.received + pair.provider.received
            if f["type"] in {"connection_cancelled", "session_completed"}
        }
        assert len(told) == 1, told
        async with db.transaction() as s:
            state = (
                await s.execute(
                    select(WorkSession.connection_state).where(
                        WorkSession.work_order_id == pair.work_id
                    )
                )
            ).scalar_one()
        assert {"connection_cancelled": "cancelled", "session_completed": "completed"}[
            told.pop()
        ] == state


async def test_someone_elses_session_is_not_found(server: Server) -> None:
    async with (
        live_session(server) as pair,
        open_client(server, "seeker", uid("seeker")) as outsider,
    ):
        for frame in (
            {"type": "medium_selection", "session_id": pair.session_id, "mediums": {}},
            {"type": "location_update", "session_id": pair.session_id, "lat": 1, "lng": 1},
            {"type": "start_chat", "session_id": pair.session_id},
            {"type": "chat_message", "session_id": pair.session_id, "message": "hi"},
            {"type": "typing_indicator", "session_id": pair.session_id, "is_typing": True},
            {"type": "cancel_connection", "session_id": pair.session_id},
            {"type": "resume", "session_id": pair.session_id, "last_seq": 0},
        ):
            error = await outsider.request(frame, "error")
            assert error["code"] == "session_not_found", frame
