"""Section 2 of the contract: the handshake, tokens, roles and the first frame."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.realtime.conftest import Server, live_session, open_client, uid


async def _close_code(
    url: str, headers: dict[str, str] | None = None
) -> tuple[int | None, list[str]]:
    """Connect and read until closed: (close code, frames received before it)."""
    frames: list[str] = []
    async with connect(url, additional_headers=headers or {}, ping_interval=None) as ws:
        try:
            while True:
                frames.append(str(await ws.recv()))
        except ConnectionClosed as closed:
            return (closed.rcvd.code if closed.rcvd else None), frames


@pytest.mark.parametrize(
    "token",
    ["", "not-a-jwt", "a.b.c"],
    ids=["missing", "garbage", "malformed"],
)
async def test_bad_token_is_closed_with_4401_and_nothing_else(server: Server, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    code, frames = await _close_code(f"{server.ws_url}/ws/work/seeker/", headers)
    assert (code, frames) == (4401, [])


async def test_expired_token_is_closed_with_4401(server: Server) -> None:
    token = server.token(uid("s"), "seeker", ttl_s=-10)
    code, frames = await _close_code(f"{server.ws_url}/ws/work/seeker/?token={token}")
    assert (code, frames) == (4401, [])


async def test_token_signed_with_another_secret_is_refused(server: Server) -> None:
    from worksession.kit.jwt import TokenVerifier

    forged = TokenVerifier(
        algorithms=["HS256"],
        hmac_secret="another-secret-of-sufficient-length-0000",
        public_key=None,
    ).issue(sub="mallory", user_type="seeker")
    code, _ = await _close_code(f"{server.ws_url}/ws/work/seeker/?token={forged}")
    assert code == 4401


@pytest.mark.parametrize(
    ("endpoint", "user_type"),
    [("seeker", "provider"), ("provider", "seeker"), ("seeker", "service")],
)
async def test_wrong_role_is_closed_with_4403(
    server: Server, endpoint: str, user_type: str
) -> None:
    token = server.token(uid("u"), user_type)
    code, frames = await _close_code(f"{server.ws_url}/ws/work/{endpoint}/?token={token}")
    assert (code, frames) == (4403, [])


@pytest.mark.parametrize("path_suffix", ["/", ""], ids=["slash", "no-slash"])
@pytest.mark.parametrize("via_query", [False, True], ids=["header", "query"])
async def test_connected_is_the_first_frame(
    server: Server, path_suffix: str, via_query: bool
) -> None:
    user = uid("seeker")
    async with open_client(
        server, "seeker", user, via_query=via_query, path_suffix=path_suffix, expect_connected=False
    ) as client:
        connected = await client.recv()
    assert connected["type"] == "connected"
    assert connected["user_type"] == "seeker"
    assert connected["session"] is None
    assert connected["pending_work"] == []
    assert connected["server_time"].endswith("Z")


async def test_provider_finds_open_offers_in_pending_work(server: Server) -> None:
    seeker, provider = uid("seeker"), uid("provider")
    order = await server.create_order(
        seeker_id=seeker,
        provider_ids=[provider],
        details={"job": "plumbing"},
        seeker_location={"lat": 12.97, "lng": 77.59},
    )
    async with open_client(server, "provider", provider, expect_connected=False) as client:
        connected = await client.recv()
    [pending] = connected["pending_work"]
    assert pending["work_id"] == order["work_id"]
    assert pending["details"] == {"job": "plumbing"}
    assert pending["seeker_location"] == {"lat": 12.97, "lng": 77.59}
    assert pending["created_at"].endswith("Z")


async def test_connected_carries_the_live_session_snapshot(server: Server) -> None:
    async with (
        live_session(server) as pair,
        open_client(server, "seeker", pair.seeker_id, expect_connected=False) as again,
    ):
        connected = await again.recv()
    snapshot = connected["session"]
    assert snapshot == {
        "session_id": pair.session_id,
        "work_id": pair.work_id,
        "connection_state": "waiting",
        "your_role": "seeker",
        "chat_room_id": None,
        "mediums": {"seeker": None, "provider": None},
        "distance_meters": None,
        "distance_formatted": None,
        "last_seq": 1,
        "peer_online": True,  # the provider's socket is open
    }


async def test_ping_is_answered_with_pong_and_request_id(server: Server) -> None:
    async with open_client(server, "seeker", uid("seeker")) as client:
        pong = await client.request({"type": "ping", "request_id": "r-1"}, "pong")
    assert pong["request_id"] == "r-1"
    assert pong["server_time"].endswith("Z")
