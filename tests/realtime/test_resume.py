"""Section 6: reconnect and ``resume`` get a client exactly what it missed, in order, once.

A replayed frame must be byte for byte the frame a device that stayed connected received
live, so these compare raw texts, not decoded dicts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.realtime.conftest import (
    Client,
    Pair,
    Server,
    dedicated_server,
    live_session,
    open_client,
    uid,
)
from tests.realtime.two_workers import Cluster, needs_postgresql_and_redis, two_workers_running
from worksession.kit.db import Database
from worksession.models import ChatMessage

BURST = 200
DROP_AFTER = 70
AWAY_UNTIL = 150
BURST_LIMITS = {
    "rate_limit_per_s": "1000",
    "rate_limit_burst": "1000",
    "user_rate_limit_per_s": "1000",
    "user_rate_limit_burst": "1000",
}


@pytest.fixture(scope="module")
def burst_server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that lets one socket send 200 frames in a second or two."""
    with dedicated_server(
        db_url, tmp_path_factory.mktemp("burst_server"), **BURST_LIMITS
    ) as running:
        yield running


@pytest.fixture(scope="module")
def forgetful_server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Messages (and so the history of ended sessions) expire one second after the end."""
    with dedicated_server(
        db_url, tmp_path_factory.mktemp("forgetful_server"), message_retention_hours=str(1 / 3600)
    ) as running:
        yield running


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Cluster]:
    with two_workers_running(tmp_path) as running:
        yield running


@pytest.fixture
def burst_workers(tmp_path: Path) -> Iterator[Cluster]:
    with two_workers_running(tmp_path, **BURST_LIMITS) as running:
        yield running


def connected_session(client: Client) -> dict[str, Any] | None:
    """The ``session`` snapshot of the ``connected`` frame ``open_client`` consumed."""
    connected = client.received[0]
    assert connected["type"] == "connected"
    session: dict[str, Any] | None = connected["session"]
    return session


def sequenced(client: Client, start: int = 0) -> list[tuple[int, str]]:
    """(seq, raw text) of every frame with a seq the client received from ``start`` on."""
    return [
        (frame["seq"], raw)
        for frame, raw in zip(client.received[start:], client.raw[start:], strict=True)
        if "seq" in frame
    ]


async def read_until_seq(client: Client, last_seq: int, timeout: float = 10) -> None:
    """Read (keeping everything in ``received``) until a frame with ``last_seq`` arrived."""
    await client.drain(0)  # frames an ``expect`` stepped over are in ``received`` already
    async with asyncio.timeout(timeout):
        while not any(f.get("seq") == last_seq for f in client.received):
            await client.recv()


async def resume(client: Client, session_id: str, last_seq: int) -> dict[str, Any]:
    """Send ``resume`` and wait for ``resumed``; the replay is in ``client.received``."""
    resumed = await client.request(
        {"type": "resume", "session_id": session_id, "last_seq": last_seq, "request_id": "rs"},
        "resumed",
    )
    await client.drain(0)
    return resumed


async def message_status(database_url: str, message_id: str) -> str:
    db = Database(database_url)
    try:
        async with db.transaction() as s:
            status: str = (
                await s.execute(
                    select(ChatMessage.delivery_status).where(
                        ChatMessage.message_id == uuid.UUID(message_id)
                    )
                )
            ).scalar_one()
    finally:
        await db.dispose()
    return status


async def history_status(server: Server, token: str, session_id: str, message_id: str) -> str:
    """The message's status as ``GET /v1/sessions/{id}/messages`` shows it."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        response = await http.get(
            f"/v1/sessions/{session_id}/messages", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200, response.text
    [item] = [m for m in response.json()["messages"] if m["message_id"] == message_id]
    status: str = item["status"]
    return status


async def my_session(server: Server, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        response = await http.get("/v1/me/session", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@asynccontextmanager
async def session_across(seeker_at: Server, provider_at: Server) -> AsyncIterator[Pair]:
    """Like ``live_session``, with each participant on a server of its own."""
    seeker_id, provider_id = uid("seeker"), uid("provider")
    async with (
        open_client(seeker_at, "seeker", seeker_id) as seeker,
        open_client(provider_at, "provider", provider_id) as provider,
    ):
        order = await seeker_at.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        await provider.expect("work_request", work_id=order["work_id"])
        accepted = await provider.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True},
            "work_accepted",
        )
        await seeker.expect("work_accepted", seq=1)
        yield Pair(
            seeker, provider, seeker_id, provider_id, order["work_id"], accepted["session_id"]
        )


# --- a burst interrupted -------------------------------------------------------------------


async def _burst_interrupted_then_resumed(
    *, sender_at: Server, dropped_at: Server, always_at: Server, back_at: Server
) -> None:
    """The provider sends 200 messages; one of the seeker's two devices drops after 70
    and comes back (maybe on another worker) while the other stays connected."""
    async with (
        session_across(dropped_at, sender_at) as pair,
        open_client(always_at, "seeker", pair.seeker_id) as always,
    ):
        # The burst in three acts: until the drop; while the device is away (replayed
        # by the resume); and while it resumes (live on the new socket, before and after
        # ``resumed``).
        dropped, away_done, back_online = asyncio.Event(), asyncio.Event(), asyncio.Event()
        pauses = {DROP_AFTER + 10: dropped, AWAY_UNTIL: back_online}

        async def send_burst() -> list[dict[str, Any]]:
            acks = []
            for i in range(BURST):
                if i in pauses:
                    if i == AWAY_UNTIL:
                        away_done.set()
                    await pauses[i].wait()
                acks.append(
                    await pair.provider.request(
                        {
                            "type": "chat_message",
                            "session_id": pair.session_id,
                            "message": f"burst {i}",
                            "client_msg_id": f"b-{i}",
                        },
                        "chat_message_ack",
                        client_msg_id=f"b-{i}",
                    )
                )
            return acks

        async def drop_mid_burst() -> int:
            seen = 0
            while seen < DROP_AFTER:
                frame = await pair.seeker.recv()
                seen += frame["type"] == "chat_message"
            await pair.seeker.ws.close()
            dropped.set()
            return int(frame["seq"])

        sender = asyncio.create_task(send_burst())
        # Read the other device all along, as a phone would: 200 frames must not back up.
        follower = asyncio.create_task(read_until_seq(always, 2 + BURST, timeout=60))
        last_seen = await drop_mid_burst()
        await away_done.wait()
        async with open_client(back_at, "seeker", pair.seeker_id) as back:
            back_online.set()
            snapshot = connected_session(back)
            assert snapshot is not None
            # A slow client: the burst reaches the new socket before it asks to resume.
            assert (await back.recv())["seq"] == snapshot["last_seq"] + 1
            resumed = await resume(back, pair.session_id, last_seen)
            acks = await sender
            final = acks[-1]["seq"]
            await read_until_seq(back, final)
            await follower
            await back.nothing_more()
            await always.nothing_more()

    live = sequenced(always)
    live_by_seq = dict(live)
    assert [seq for seq, _ in live] == list(range(2, final + 1))  # chat_ready, then the burst
    assert final == 2 + BURST
    missing = list(range(last_seen + 1, final + 1))
    assert len(missing) >= BURST - DROP_AFTER - 10

    # Before the drop: what the dropped device had was exactly what the other one got.
    before_drop = sequenced(pair.seeker)
    assert [seq for seq, _ in before_drop] == list(range(1, last_seen + 1))
    assert all(live_by_seq[seq] == raw for seq, raw in before_drop if seq > 1)

    # After reconnecting: every missing event exactly once, byte-equal to the live copy.
    after = sequenced(back, start=1)
    assert sorted(seq for seq, _ in after) == missing
    assert all(raw == live_by_seq[seq] for seq, raw in after)

    # Order: events that reached the new socket live before the resume was handled (all
    # newer than the snapshot), then the replay in order from last_seen + 1, then
    # ``resumed``, then live events, newer than anything before.
    frames = back.received[1:]
    cut = next(i for i, f in enumerate(frames) if f["type"] == "resumed")
    before_resumed = [f["seq"] for f in frames[:cut]]
    start = before_resumed.index(last_seen + 1)
    early, replayed = before_resumed[:start], before_resumed[start:]
    assert early
    assert all(seq > snapshot["last_seq"] for seq in early)
    assert early == sorted(early)
    assert replayed == sorted(replayed)
    assert set(range(last_seen + 1, snapshot["last_seq"] + 1)) <= set(replayed)
    after_resumed = [f["seq"] for f in frames[cut + 1 :]]
    assert after_resumed == sorted(after_resumed)
    assert all(seq > max(before_resumed) for seq in after_resumed)
    assert resumed == {
        "type": "resumed",
        "session_id": pair.session_id,
        "last_seq": max(before_resumed),
        "request_id": "rs",
    }


async def test_a_burst_interrupted_then_resumed_is_complete_ordered_and_byte_equal(
    burst_server: Server,
) -> None:
    await _burst_interrupted_then_resumed(
        sender_at=burst_server,
        dropped_at=burst_server,
        always_at=burst_server,
        back_at=burst_server,
    )


@needs_postgresql_and_redis
async def test_a_burst_interrupted_then_resumed_on_the_other_worker(
    burst_workers: Cluster,
) -> None:
    a, b = burst_workers.servers
    await _burst_interrupted_then_resumed(sender_at=a, dropped_at=b, always_at=b, back_at=a)


# --- the whole session, for each role ------------------------------------------------------


async def _play_a_short_session(pair: Pair) -> int:
    """Mediums both ways, a chat message, and a read receipt: seq 2 to 7. No request ids,
    so the live frames are what a replay must reproduce exactly."""
    sid = pair.session_id
    await pair.seeker.request(
        {"type": "medium_selection", "session_id": sid, "mediums": {"call": "9876543210"}},
        "mediums_selected",
    )
    await pair.provider.expect("seeker_mediums_selected")
    await pair.provider.request(
        {"type": "medium_share", "session_id": sid, "mediums": {"whatsapp": "8765432109"}},
        "mediums_shared",
    )
    await pair.seeker.expect("provider_mediums_shared")
    ack = await pair.seeker.request(
        {"type": "chat_message", "session_id": sid, "message": "on my way?"}, "chat_message_ack"
    )
    await pair.provider.expect("chat_message")
    await pair.provider.send({"type": "message_read", "message_id": ack["message_id"]})
    await pair.seeker.expect("message_status_update", status="read")
    await pair.seeker.drain(0.2)  # what the expects above stepped over stays in ``received``
    await pair.provider.drain(0.2)
    return 7


async def test_resume_from_zero_replays_the_whole_session_for_each_role(server: Server) -> None:
    async with live_session(server) as pair:
        last = await _play_a_short_session(pair)
        async with (
            open_client(server, "seeker", pair.seeker_id) as seeker,
            open_client(server, "provider", pair.provider_id) as provider,
        ):
            seeker_resumed = await resume(seeker, pair.session_id, 0)
            provider_resumed = await resume(provider, pair.session_id, 0)
        await pair.seeker.nothing_more()

    assert [f["type"] for f in seeker.received[1:]] == [
        "work_accepted",
        "mediums_selected",
        "provider_mediums_shared",
        "chat_ready",
        "chat_message_ack",
        "message_status_update",
        "message_status_update",
        "resumed",
    ]
    # 1.1: the recipient replays the receipts it gave too, so both see seq 1 to 7.
    assert [f["type"] for f in provider.received[1:]] == [
        "work_accepted",
        "seeker_mediums_selected",
        "mediums_shared",
        "chat_ready",
        "chat_message",
        "message_status_update",
        "message_status_update",
        "resumed",
    ]
    for client in (seeker, provider):
        assert [f["seq"] for f in client.received[1:-1]] == list(range(1, last + 1))
    assert sequenced(seeker, start=1) == sequenced(pair.seeker)
    assert sequenced(provider, start=1) == sequenced(pair.provider)
    assert seeker_resumed["last_seq"] == provider_resumed["last_seq"] == last


# --- ended sessions ------------------------------------------------------------------------


async def test_an_ended_session_can_be_resumed_and_the_socket_stays_open(server: Server) -> None:
    async with live_session(server) as pair:
        await pair.seeker.request(
            {"type": "chat_message", "session_id": pair.session_id, "message": "thanks"},
            "chat_message_ack",
        )
        await pair.provider.request(
            {"type": "complete_session", "session_id": pair.session_id}, "session_completed"
        )
        await pair.seeker.expect("session_completed")
        assert await pair.seeker.closed_with() == 1000
    async with open_client(server, "seeker", pair.seeker_id) as seeker:
        assert connected_session(seeker) is None
        resumed = await resume(seeker, pair.session_id, 0)
        pong = await seeker.request({"type": "ping"}, "pong")
        await seeker.nothing_more()
    assert [f["type"] for f in seeker.received[1:-1]] == [
        "work_accepted",
        "chat_ready",
        "chat_message_ack",
        "session_completed",
        "resumed",
    ]
    assert sequenced(seeker, start=1) == sequenced(pair.seeker)
    assert resumed["last_seq"] == 4
    assert pong["type"] == "pong"


async def test_an_outsiders_resume_is_session_not_found(server: Server) -> None:
    async with live_session(server) as pair:
        await pair.provider.request(
            {"type": "complete_session", "session_id": pair.session_id}, "session_completed"
        )
    async with open_client(server, "provider", uid("provider")) as outsider:
        for session_id in (pair.session_id, str(uuid.uuid4())):
            error = await outsider.request(
                {"type": "resume", "session_id": session_id, "last_seq": 0, "request_id": "x"},
                "error",
            )
            assert (error["code"], error["request_id"]) == ("session_not_found", "x")
        await outsider.nothing_more()


async def test_an_ended_session_whose_messages_expired_cannot_be_resumed(
    forgetful_server: Server,
) -> None:
    async with live_session(forgetful_server) as pair:
        await pair.provider.request(
            {"type": "complete_session", "session_id": pair.session_id}, "session_completed"
        )
    await asyncio.sleep(1.2)
    async with open_client(forgetful_server, "seeker", pair.seeker_id) as seeker:
        error = await seeker.request(
            {"type": "resume", "session_id": pair.session_id, "last_seq": 0}, "error"
        )
        await seeker.nothing_more()
    assert error["code"] == "invalid_state"


# --- an offline recipient ------------------------------------------------------------------


async def _offline_recipient_then_delivered(
    seeker_at: Server, provider_at: Server, database_url: str
) -> None:
    """The provider is away while the seeker writes; it comes back, resumes, acks."""
    async with session_across(seeker_at, provider_at) as pair:
        await pair.provider.ws.close()
        ack = await pair.seeker.request(
            {"type": "chat_message", "session_id": pair.session_id, "message": "are you there?"},
            "chat_message_ack",
        )
        mid = ack["message_id"]
        await pair.seeker.expect("chat_ready", seq=2)
        async with open_client(provider_at, "provider", pair.provider_id) as provider:
            snapshot = connected_session(provider)
            assert snapshot is not None
            assert snapshot["last_seq"] == ack["seq"] == 3
            resumed = await resume(provider, pair.session_id, 1)
            assert await message_status(database_url, mid) == "sent"
            token = provider_at.token(pair.provider_id, "provider")
            assert await history_status(provider_at, token, pair.session_id, mid) == "sent"
            # Either worker tells the same snapshot over REST.
            assert await my_session(seeker_at, token) == snapshot
            await provider.send({"type": "message_delivered", "message_id": mid})
            update = await pair.seeker.expect("message_status_update")
            await pair.seeker.nothing_more()
        assert await message_status(database_url, mid) == "delivered"
        assert await history_status(seeker_at, token, pair.session_id, mid) == "delivered"

    assert [f["type"] for f in provider.received[1:]] == ["chat_ready", "chat_message", "resumed"]
    message = provider.received[2]
    assert (message["message_id"], message["message"], message["seq"]) == (
        mid,
        "are you there?",
        3,
    )
    assert resumed["last_seq"] == 3
    assert (update["message_id"], update["status"], update["seq"]) == (mid, "delivered", 4)


async def test_a_message_sent_while_the_recipient_was_offline_is_resumed_then_delivered(
    server: Server,
) -> None:
    await _offline_recipient_then_delivered(server, server, server.settings_database_url)


@needs_postgresql_and_redis
async def test_offline_recipient_then_delivered_across_two_workers(
    two_workers: Cluster,
) -> None:
    await _offline_recipient_then_delivered(two_workers.a, two_workers.b, two_workers.database_url)
