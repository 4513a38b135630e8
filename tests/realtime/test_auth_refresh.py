"""Section 6: a socket lives as long as its token, and ``auth_refresh`` extends it.

Token ``exp`` is a whole second, so the short-lived tokens here are issued just after a
second boundary: their ``exp`` then falls two seconds (less a few milliseconds) after the
socket opens, and "closed at exp" can be measured to a tenth of a second.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from tests.realtime.conftest import Client, Server, open_client, uid
from worksession.kit.clock import isoformat_z
from worksession.lifespan import build_verifier

TTL_S = 2
CLOSE_AT_EXP_WITHIN_S = 0.7
"""A close this long after ``exp`` is late: the server closes on a timer set for ``exp``, and
the slack is for a loaded machine (a timer 0.8 s late must still fail)."""


async def short_token(server: Server, sub: str, role: str) -> tuple[str, float]:
    """A token that expires ``TTL_S`` seconds from now, and its ``exp`` as a timestamp."""
    now = time.time()
    await asyncio.sleep(math.ceil(now) - now + 0.005)
    token = server.token(sub, role, ttl_s=TTL_S)
    return token, build_verifier(server.settings).verify(token).exp.timestamp()


async def closed_at(client: Client) -> tuple[int | None, float]:
    """Wait for the server to close the socket: the close code and the time it came."""
    code = await client.closed_with(timeout=TTL_S + 3)
    return code, time.time()


def refresh(token: str, request_id: str) -> dict[str, Any]:
    return {"type": "auth_refresh", "token": token, "request_id": request_id}


async def test_a_socket_is_closed_with_4401_when_its_token_expires(server: Server) -> None:
    sub = uid("seeker")
    token, exp = await short_token(server, sub, "seeker")
    opened = time.time()
    async with open_client(server, "seeker", sub, token=token) as seeker:
        await seeker.request({"type": "ping"}, "pong")
        code, at = await closed_at(seeker)
    assert code == 4401
    assert 1.9 <= at - opened <= 3.0
    assert -0.05 <= at - exp <= CLOSE_AT_EXP_WITHIN_S


async def test_a_refreshed_socket_outlives_its_first_token(server: Server) -> None:
    sub = uid("provider")
    token, exp = await short_token(server, sub, "provider")
    async with open_client(server, "provider", sub, token=token) as provider:
        fresh = server.token(sub, "provider", ttl_s=3600)
        refreshed = await provider.request(refresh(fresh, "a"), "auth_refreshed")
        await asyncio.sleep(exp - time.time() + CLOSE_AT_EXP_WITHIN_S)
        pong = await provider.request({"type": "ping"}, "pong")
        await provider.nothing_more()
    new_exp = build_verifier(server.settings).verify(fresh).exp
    assert refreshed == {"type": "auth_refreshed", "exp": isoformat_z(new_exp), "request_id": "a"}
    assert pong["type"] == "pong"


@pytest.mark.parametrize("role", ["seeker", "provider"])
async def test_a_refresh_for_anyone_else_is_forbidden_and_changes_nothing(
    server: Server, role: str
) -> None:
    sub = uid(role)
    other_role = "provider" if role == "seeker" else "seeker"
    token, exp = await short_token(server, sub, role)
    opened = time.time()
    refused = {
        "another user": server.token(uid(role), role),
        "another role": server.token(sub, other_role),
        "a service": server.token(sub, "service"),
        "garbage": "not-a-jwt",
        "expired": server.token(sub, role, ttl_s=-10),
    }
    async with open_client(server, role, sub, token=token) as client:
        errors = {
            why: await client.request(refresh(bad, why), "error") for why, bad in refused.items()
        }
        pong = await client.request({"type": "ping"}, "pong")
        code, at = await closed_at(client)
    assert {why: (e["code"], e["request_id"]) for why, e in errors.items()} == {
        why: ("forbidden", why) for why in refused
    }
    assert all(refused[why] not in e["message"] for why, e in errors.items())
    assert pong["type"] == "pong"
    assert code == 4401
    assert 1.9 <= at - opened <= 3.0
    assert -0.05 <= at - exp <= CLOSE_AT_EXP_WITHIN_S
