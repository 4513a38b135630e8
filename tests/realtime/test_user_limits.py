"""Issue 12, finding 5, on the embedded default (one worker, the in-process broker): the
limits per user of PROTOCOL 2, 3 and 7 (*1.1*). ``tests/scaleout/test_user_limits.py``
holds the same limits across two workers."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import httpx

from tests.realtime.conftest import Client, Server, open_client, uid


async def _ping(client: Client) -> None:
    await client.request({"type": "ping"}, "pong")


async def test_a_sixth_socket_closes_the_oldest_with_4409(server: Server) -> None:
    user = uid("provider")
    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(open_client(server, "provider", user)) for _ in range(5)
        ]
        sixth = await stack.enter_async_context(open_client(server, "provider", user))
        assert await sockets[0].closed_with() == 4409
        for client in (*sockets[1:], sixth):
            await _ping(client)


async def _answers(client: Client, frames: int) -> list[dict[str, object]]:
    got: list[dict[str, object]] = []
    while len(got) < frames:
        frame = await client.recv(timeout=15)
        if frame["type"] in ("pong", "error"):
            got.append(frame)
    return got


async def test_three_sockets_share_the_users_frame_budget(server: Server) -> None:
    user = uid("seeker")
    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(open_client(server, "seeker", user)) for _ in range(3)
        ]
        started = time.monotonic()
        for client in sockets:
            for i in range(40):  # within the socket's own bursts of 40
                await client.send({"type": "ping", "request_id": f"p{i}"})
        answers = await asyncio.gather(*(_answers(client, 40) for client in sockets))
        elapsed = time.monotonic() - started
    flat = [frame for answered in answers for frame in answered]
    pongs = sum(1 for frame in flat if frame["type"] == "pong")
    limited = [frame for frame in flat if frame.get("code") == "rate_limited"]
    assert limited, "120 frames in a burst from one user, and not one rate_limited"
    assert all("retry_after_ms" in frame for frame in limited)
    assert pongs <= 80 + 40 * elapsed, (pongs, elapsed)
    assert pongs >= 80  # the burst itself is served


async def test_a_participant_past_its_rest_budget_gets_429(server: Server) -> None:
    token = server.token(uid("seeker"), "seeker")
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        responses = [await http.get("/v1/me/session", headers=headers) for _ in range(30)]
    elapsed = time.monotonic() - started
    served = [r for r in responses if r.status_code == 404]  # no live session
    refused = [r for r in responses if r.status_code == 429]
    assert len(served) + len(refused) == 30
    assert refused, "30 requests at once, and not one 429"
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert len(served) <= 20 + 10 * elapsed, (len(served), elapsed)


async def test_sockets_opened_at_once_past_the_cap_close_cleanly(server: Server) -> None:
    # Twelve handshakes at once: some sockets are pushed out while their `connected` frame
    # is still being read from the database. Each must end with a close frame (4409 for the
    # pushed out), never a traceback, and exactly five must stay open.
    user = uid("provider")
    async with AsyncExitStack() as stack:

        async def open_one() -> Client:
            return await stack.enter_async_context(
                open_client(server, "provider", user, expect_connected=False)
            )

        async def close_code(client: Client) -> int | None:
            try:
                return await client.closed_with(timeout=3)
            except TimeoutError:
                return None  # still open

        sockets = await asyncio.gather(*(open_one() for _ in range(12)))
        codes = await asyncio.gather(*(close_code(s) for s in sockets))
        assert sorted(c for c in codes if c is not None) == [4409] * 7, codes
        assert "Traceback" not in server.log()
        assert "Exception in ASGI application" not in server.log()
