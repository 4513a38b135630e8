"""Presence (*1.1*): ``connected.session.peer_online`` and the ephemeral ``peer_presence``
frames, on one worker with the in-process broker and over two workers on Redis, a killed
worker included."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.realtime.conftest import Client, Pair, Server, live_session, open_client, uid
from tests.realtime.two_workers import Cluster, needs_postgresql_and_redis, two_workers_running

GRACE_S = 5.0


async def _snapshot(server: Server, role: str, user_id: str) -> dict[str, object]:
    """``connected.session`` of a fresh socket of the user (closed right after)."""
    async with open_client(server, role, user_id, expect_connected=False) as client:
        connected = await client.recv()
    assert connected["type"] == "connected"
    session = connected["session"]
    assert isinstance(session, dict)
    return session


async def _me_session(server: Server, role: str, user_id: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        response = await http.get(
            "/v1/me/session", headers={"Authorization": f"Bearer {server.token(user_id, role)}"}
        )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def _presence_after(client: Client, online: bool, timeout: float) -> float:
    """Seconds until the next ``peer_presence`` frame, which must say ``online``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    frame = await client.expect("peer_presence", timeout=timeout)
    assert frame["online"] is online, frame
    return loop.time() - started


async def _no_presence_within(client: Client, seconds: float) -> None:
    frames = await client.drain(seconds)
    assert [f for f in frames if f["type"] == "peer_presence"] == [], frames


# --- one worker, in-process broker -------------------------------------------------------


async def test_the_snapshot_says_whether_the_peer_is_connected(server: Server) -> None:
    async with live_session(server) as pair:
        seen = await _snapshot(server, "seeker", pair.seeker_id)
        assert (seen["session_id"], seen["peer_online"]) == (pair.session_id, True)
        assert (await _me_session(server, "provider", pair.provider_id))["peer_online"] is True
        await pair.provider.ws.close()
        # The count drops at once; only the frames wait out the grace.
        await asyncio.sleep(0.3)
        assert (await _snapshot(server, "seeker", pair.seeker_id))["peer_online"] is False
        assert (await _me_session(server, "seeker", pair.seeker_id))["peer_online"] is False
        # The provider's own view: the seeker is still there.
        assert (await _snapshot(server, "provider", pair.provider_id))["peer_online"] is True


async def test_the_peer_leaving_and_coming_back_on_one_worker(server: Server) -> None:
    async with live_session(server) as pair:
        await pair.provider.ws.close()
        took = await _presence_after(pair.seeker, False, timeout=GRACE_S + 3)
        assert took >= GRACE_S - 0.5, took
        async with open_client(server, "provider", pair.provider_id) as back:
            assert back.received[0]["session"]["peer_online"] is True
            took = await _presence_after(pair.seeker, True, timeout=3)
            assert took < 2.5, took
            frame = pair.seeker.received[-1]
            assert frame == {"type": "peer_presence", "session_id": pair.session_id, "online": True}
            await back.nothing_more(0.5)  # the seeker never left: nothing for the provider


async def test_the_frame_reaches_every_socket_of_the_user(server: Server) -> None:
    async with (
        live_session(server) as pair,
        open_client(server, "seeker", pair.seeker_id) as second,
    ):
        await pair.provider.ws.close()
        for client in (pair.seeker, second):
            await _presence_after(client, False, timeout=GRACE_S + 3)


async def test_a_session_that_starts_on_an_open_socket_is_watched(server: Server) -> None:
    """No snapshot named the peer: the socket learns it from work_accepted."""
    async with live_session(server) as pair:
        # live_session's sockets were open before the session began.
        await pair.seeker.ws.close()
        await _presence_after(pair.provider, False, timeout=GRACE_S + 3)
        async with open_client(server, "seeker", pair.seeker_id):
            await _presence_after(pair.provider, True, timeout=3)


# --- two workers, Redis ------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with two_workers_running(tmp_path_factory.mktemp("presence")) as running:
        yield running


@asynccontextmanager
async def across(seeker_on: Server, provider_on: Server) -> AsyncIterator[Pair]:
    """A live session whose seeker is connected to one worker and provider to the other."""
    seeker_id, provider_id = uid("seeker"), uid("provider")
    async with (
        open_client(seeker_on, "seeker", seeker_id) as seeker,
        open_client(provider_on, "provider", provider_id) as provider,
    ):
        order = await seeker_on.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        work_id = order["work_id"]
        await provider.expect("work_request", work_id=work_id)
        accepted = await provider.request(
            {"type": "work_response", "work_id": work_id, "accepted": True}, "work_accepted"
        )
        await seeker.expect("work_accepted", seq=1)
        yield Pair(seeker, provider, seeker_id, provider_id, work_id, accepted["session_id"])


@needs_postgresql_and_redis
async def test_presence_across_two_workers(workers: Cluster) -> None:
    async with across(workers.a, workers.b) as pair:
        assert (await _snapshot(workers.a, "seeker", pair.seeker_id))["peer_online"] is True
        assert (await _me_session(workers.a, "seeker", pair.seeker_id))["peer_online"] is True

        await pair.provider.ws.close()
        await _no_presence_within(pair.seeker, GRACE_S - 0.5)
        took = await _presence_after(pair.seeker, False, timeout=3.5)  # by 8 s
        assert (await _snapshot(workers.a, "seeker", pair.seeker_id))["peer_online"] is False

        async with open_client(workers.b, "provider", pair.provider_id) as back:
            assert back.received[0]["session"]["peer_online"] is True
            took = await _presence_after(pair.seeker, True, timeout=3)
            assert took < 2.5, took


@needs_postgresql_and_redis
async def test_a_quick_reconnect_across_workers_says_nothing(workers: Cluster) -> None:
    async with across(workers.a, workers.b) as pair:
        await pair.provider.ws.close()
        await asyncio.sleep(1.5)
        # Back within the grace, on the other worker this time.
        async with open_client(workers.a, "provider", pair.provider_id):
            await _no_presence_within(pair.seeker, GRACE_S + 2)


@pytest.fixture
def doomed_workers(tmp_path: Path) -> Iterator[Cluster]:
    """Two workers of this test's own: it kills one."""
    with two_workers_running(tmp_path) as running:
        yield running


@needs_postgresql_and_redis
@pytest.mark.timeout(180)  # two server starts and a kill, on a loaded machine
async def test_a_killed_workers_users_go_offline_for_their_peers(
    doomed_workers: Cluster,
) -> None:
    cluster = doomed_workers
    async with across(cluster.a, cluster.b) as pair:
        loop = asyncio.get_running_loop()
        cluster.b.process.send_signal(signal.SIGKILL)
        killed = loop.time()
        await asyncio.to_thread(cluster.b.process.wait)
        await _presence_after(pair.seeker, False, timeout=30)
        took = loop.time() - killed
        # The liveness key lapses within 10 s of the last heartbeat, then the grace.
        assert took < 30, took
        assert (await _snapshot(cluster.a, "seeker", pair.seeker_id))["peer_online"] is False

        async with open_client(cluster.a, "provider", pair.provider_id) as back:
            assert back.received[0]["session"]["peer_online"] is True
            await _presence_after(pair.seeker, True, timeout=3)
