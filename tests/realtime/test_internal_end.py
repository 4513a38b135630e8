"""The internal REST endings against a real server: the participants' sockets hear them
exactly as they hear an ending sent over the WebSocket, and then close with 1000."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from tests.realtime.conftest import Server, live_session, open_client
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
