"""*1.1* A seeker withdraws a pending order (``cancel_work``) and sees their pending orders in
``connected.open_orders``; real uvicorn, real sockets, on each backend."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests.realtime.conftest import Server, live_session, open_client, uid
from worksession.kit.db import Database
from worksession.models import WorkOffer, WorkOrder


def cancel(work_id: Any, request_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "cancel_work", "work_id": work_id}
    if request_id is not None:
        frame["request_id"] = request_id
    return frame


async def test_cancel_work_tells_every_seeker_socket_and_every_offered_provider(
    server: Server, db: Database
) -> None:
    seeker_id, p1, p2, outsider_id = uid("seeker"), uid("provider"), uid("provider"), uid("p")
    async with (
        open_client(server, "seeker", seeker_id) as phone,
        open_client(server, "seeker", seeker_id) as laptop,
        open_client(server, "provider", p1) as first,
        open_client(server, "provider", p2) as second,
        open_client(server, "provider", outsider_id) as outsider,
    ):
        order = await server.create_order(seeker_id=seeker_id, provider_ids=[p1, p2])
        work_id = order["work_id"]
        await first.expect("work_request", work_id=work_id)
        await second.expect("work_request", work_id=work_id)
        await second.request(
            {"type": "work_response", "work_id": work_id, "accepted": False}, "work_declined"
        )

        answer = await phone.request(cancel(work_id, "withdraw-1"), "work_withdrawn")
        other_device = await laptop.expect("work_withdrawn")
        gone = await first.expect("work_unavailable")

        assert answer == {"type": "work_withdrawn", "work_id": work_id, "request_id": "withdraw-1"}
        assert other_device == {"type": "work_withdrawn", "work_id": work_id}
        assert gone == {"type": "work_unavailable", "work_id": work_id}
        # The one who had declined has nothing to learn; neither has a stranger.
        await second.nothing_more()
        await outsider.nothing_more()
        await phone.nothing_more()

        late = await first.request(
            {"type": "work_response", "work_id": work_id, "accepted": True, "request_id": "l"},
            "error",
        )
        assert (late["code"], late["request_id"]) == ("work_unavailable", "l")
        again = await laptop.request(cancel(work_id, "again"), "error")
        assert (again["code"], again["request_id"]) == ("work_unavailable", "again")
        await phone.nothing_more()
    async with db.transaction() as s:
        status = (
            await s.execute(select(WorkOrder.status).where(WorkOrder.id == work_id))
        ).scalar_one()
        query = select(WorkOffer.provider_id, WorkOffer.status).where(
            WorkOffer.work_order_id == work_id
        )
        offers = dict((await s.execute(query)).all())
    assert status == "withdrawn"
    assert offers == {p1: "withdrawn", p2: "declined"}


async def test_cancel_work_of_an_accepted_order_is_work_unavailable(server: Server) -> None:
    async with live_session(server) as pair:
        error = await pair.seeker.request(cancel(pair.work_id, "late"), "error")
        assert (error["code"], error["request_id"]) == ("work_unavailable", "late")
        await pair.provider.nothing_more()


async def test_cancel_work_of_another_seekers_order_is_work_not_found(server: Server) -> None:
    owner_id, thief_id, provider_id = uid("seeker"), uid("seeker"), uid("provider")
    async with (
        open_client(server, "seeker", thief_id) as thief,
        open_client(server, "provider", provider_id) as provider,
    ):
        order = await server.create_order(seeker_id=owner_id, provider_ids=[provider_id])
        await provider.expect("work_request", work_id=order["work_id"])

        error = await thief.request(cancel(order["work_id"], "x"), "error")
        unknown = await thief.request(cancel(2**31 + 7), "error")
        assert error["code"] == "work_not_found"
        assert unknown["code"] == "work_not_found"
        await provider.nothing_more()
        # Still pending: the owner can withdraw it.
        async with open_client(server, "seeker", owner_id) as owner:
            await owner.request(cancel(order["work_id"]), "work_withdrawn")
        await provider.expect("work_unavailable", work_id=order["work_id"])


async def test_a_provider_sending_cancel_work_is_forbidden(server: Server) -> None:
    seeker_id, provider_id = uid("seeker"), uid("provider")
    async with open_client(server, "provider", provider_id) as provider:
        order = await server.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        await provider.expect("work_request", work_id=order["work_id"])
        error = await provider.request(cancel(order["work_id"], "mine?"), "error")
        assert (error["code"], error["request_id"]) == ("forbidden", "mine?")
        await provider.nothing_more()


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"cancel_work","work_id":"12"}',
        '{"type":"cancel_work","work_id":true}',
        '{"type":"cancel_work","work_id":1.5}',
        '{"type":"cancel_work","work_id":0}',
        '{"type":"cancel_work","work_id":null}',
        '{"type":"cancel_work"}',
        '{"type":"cancel_work","work_id":1,"extra":1}',
        '{"type":"cancel_work","work_id":123456789012345678901234567890}',
    ],
)
async def test_a_bad_work_id_is_a_validation_error(server: Server, frame: str) -> None:
    async with open_client(server, "seeker", uid("seeker")) as seeker:
        await seeker.send(frame)
        error = await seeker.expect("error")
        assert error["code"] == "validation_error", (frame, error)


async def test_connected_lists_the_seekers_pending_orders_and_providers_get_none(
    server: Server,
) -> None:
    seeker_id, provider_id = uid("seeker"), uid("provider")
    first = await server.create_order(
        seeker_id=seeker_id, provider_ids=[provider_id], details={"task": "paint"}
    )
    second = await server.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
    await server.create_order(seeker_id=uid("seeker"), provider_ids=[provider_id])

    async with open_client(server, "seeker", seeker_id, expect_connected=False) as seeker:
        connected = await seeker.recv()
        assert connected["type"] == "connected"
        assert connected["pending_work"] == []
        assert [o["work_id"] for o in connected["open_orders"]] == [
            first["work_id"],
            second["work_id"],
        ]
        assert connected["open_orders"][0] == {
            "work_id": first["work_id"],
            "details": {"task": "paint"},
            "created_at": first["created_at"],
            "expires_at": first["expires_at"],
        }
        await seeker.request(cancel(first["work_id"]), "work_withdrawn")

    async with open_client(server, "seeker", seeker_id, expect_connected=False) as seeker:
        connected = await seeker.recv()
        assert [o["work_id"] for o in connected["open_orders"]] == [second["work_id"]]
    async with open_client(server, "provider", provider_id, expect_connected=False) as provider:
        connected = await provider.recv()
        assert connected["open_orders"] == []
        assert len(connected["pending_work"]) == 2
    async with open_client(server, "seeker", uid("seeker"), expect_connected=False) as nobody:
        assert (await nobody.recv())["open_orders"] == []
