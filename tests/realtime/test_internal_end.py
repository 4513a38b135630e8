"""The internal REST endings against a real server: the participants' sockets hear them
exactly as they hear an ending sent over the WebSocket, and then close with 1000."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.realtime.conftest import Client, Server, dedicated_server, live_session, open_client
from worksession.availability.lookup import get_availability
from worksession.kit.db import Database
from worksession.models import WorkOrder


async def _post(server: Server, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        return await http.post(
            f"/internal/v1/sessions/{path}",
            headers={"Authorization": f"Bearer {server.token('ops-svc', 'service')}"},
        )


async def test_internal_cancel_tells_both_as_system_and_closes_their_sockets(
    server: Server, db: Database
) -> None:
    async with (
        live_session(server) as pair,
        open_client(server, "provider", pair.provider_id) as second_device,
    ):
        response = await _post(server, f"{pair.session_id}/cancel")

        expected: dict[str, Any] = {
            "type": "connection_cancelled",
            "session_id": pair.session_id,
            "cancelled_by": "system",
            "seq": 2,
        }
        assert await pair.seeker.expect("connection_cancelled") == expected
        assert await pair.provider.expect("connection_cancelled") == expected
        assert await second_device.expect("connection_cancelled") == expected
        for client in (pair.seeker, pair.provider, second_device):
            assert await client.closed_with() == 1000

    assert response.status_code == 200
    assert (response.json()["state"], response.json()["cancelled_by"]) == ("cancelled", "system")
    async with db.transaction() as s:
        order = (
            await s.execute(select(WorkOrder).where(WorkOrder.id == pair.work_id))
        ).scalar_one()
        provider = await get_availability(s, pair.provider_id)
        seeker = await get_availability(s, pair.seeker_id)
    assert order.status == "cancelled"
    assert provider.provider_active is True
    assert seeker.seeker_searching is True

    again = await _post(server, f"{pair.session_id}/cancel")
    complete = await _post(server, f"{pair.session_id}/complete")
    assert (again.status_code, complete.status_code) == (409, 409)


async def test_internal_complete_tells_both_and_closes_their_sockets(
    server: Server, db: Database
) -> None:
    async with live_session(server) as pair:
        response = await _post(server, f"{pair.session_id}/complete")

        expected = {"type": "session_completed", "session_id": pair.session_id, "seq": 2}
        assert await pair.seeker.expect("session_completed") == expected
        assert await pair.provider.expect("session_completed") == expected
        assert await pair.seeker.closed_with() == 1000
        assert await pair.provider.closed_with() == 1000

    assert response.status_code == 200
    assert response.json()["state"] == "completed"
    async with db.transaction() as s:
        provider = await get_availability(s, pair.provider_id)
        seeker = await get_availability(s, pair.seeker_id)
    assert provider.provider_active is True
    assert seeker.seeker_searching is False

    assert (await _post(server, f"{pair.session_id}/cancel")).status_code == 409


async def test_a_resume_after_the_internal_cancel_replays_it(server: Server) -> None:
    async with live_session(server) as pair:
        await pair.seeker.ws.close()
        assert (await _post(server, f"{pair.session_id}/cancel")).status_code == 200
        await pair.provider.expect("connection_cancelled")

    async with open_client(server, "seeker", pair.seeker_id) as seeker:
        await seeker.send({"type": "resume", "session_id": pair.session_id, "last_seq": 1})
        replayed = await seeker.expect("connection_cancelled")
        await seeker.expect("resumed", last_seq=2)
    assert replayed == {
        "type": "connection_cancelled",
        "session_id": pair.session_id,
        "cancelled_by": "system",
        "seq": 2,
    }


# --- abandoned sessions (PROTOCOL 5, *1.1*) ------------------------------------------------

ABANDON_AFTER_S = 2


@pytest.fixture(scope="module")
def abandoning_server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with dedicated_server(
        db_url, tmp_path_factory.mktemp("abandoning"), abandon_after_s=str(ABANDON_AFTER_S)
    ) as running:
        yield running


async def test_an_untouched_session_is_cancelled_by_the_system(abandoning_server: Server) -> None:
    server = abandoning_server
    async with live_session(server) as pair:
        started = time.monotonic()
        # Frames for the session keep it alive past the limit, also those that store
        # nothing of their own: without typing and resume counting, the last fix would be
        # more than the limit before the end of this loop...
        sid = pair.session_id
        frames: list[tuple[Client, dict[str, Any]]] = [
            (
                pair.provider,
                {"type": "location_update", "session_id": sid, "lat": 12.97, "lng": 77.59},
            ),
            (pair.seeker, {"type": "typing_indicator", "session_id": sid, "is_typing": True}),
            (pair.provider, {"type": "resume", "session_id": sid, "last_seq": 1}),
            (pair.seeker, {"type": "resume", "session_id": sid, "last_seq": 1}),
            (pair.provider, {"type": "typing_indicator", "session_id": sid, "is_typing": True}),
        ]
        for client, frame in frames:
            await asyncio.sleep(ABANDON_AFTER_S * 0.6)
            await client.send(frame)
        last_frame = time.monotonic()
        assert last_frame - started > ABANDON_AFTER_S * 2.5
        # ...and with none for the limit it ends: the job runs every second. A cancel that
        # came early would be waiting in the socket already and show up at once.
        expected: dict[str, Any] = {
            "type": "connection_cancelled",
            "session_id": pair.session_id,
            "cancelled_by": "system",
        }
        for client in (pair.seeker, pair.provider):
            frame = await client.expect("connection_cancelled", timeout=ABANDON_AFTER_S + 5)
            assert {k: frame[k] for k in expected} == expected
            assert time.monotonic() - last_frame >= ABANDON_AFTER_S - 0.1
        for client in (pair.seeker, pair.provider):
            assert await client.closed_with() == 1000

    # Both are free again: a new order reaches the provider and opens a new session.
    async with (
        open_client(server, "seeker", pair.seeker_id) as seeker,
        open_client(server, "provider", pair.provider_id) as provider,
    ):
        order = await server.create_order(seeker_id=pair.seeker_id, provider_ids=[pair.provider_id])
        await provider.expect("work_request", work_id=order["work_id"])
        accepted = await provider.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True},
            "work_accepted",
        )
        assert accepted["session_id"] != pair.session_id
        await seeker.expect("work_accepted", seq=1)
