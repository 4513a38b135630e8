"""Section 2, 3 and 6: every socket of a user gets every event of that user, once, and acks
from any of the user's devices count (once per step, whichever device sent them). *1.1*:
every socket of both participants gets every event of the session, so each sees ``seq``
rise by exactly one."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.realtime.conftest import Client, Server, open_client, uid
from tests.realtime.two_workers import Cluster, needs_postgresql_and_redis, two_workers_running


@dataclass
class Devices:
    """Two phones of a seeker and two of a provider, in one live session."""

    seekers: tuple[Client, Client]
    providers: tuple[Client, Client]
    session_id: str
    seeker_id: str = ""
    provider_id: str = ""

    @property
    def everyone(self) -> tuple[Client, ...]:
        return self.seekers + self.providers


@asynccontextmanager
async def two_devices_each(
    seeker_at: tuple[Server, Server], provider_at: tuple[Server, Server]
) -> AsyncIterator[Devices]:
    """All four connected before the order; the provider's second device accepts."""
    seeker_id, provider_id = uid("seeker"), uid("provider")
    async with (
        open_client(seeker_at[0], "seeker", seeker_id) as s1,
        open_client(seeker_at[1], "seeker", seeker_id) as s2,
        open_client(provider_at[0], "provider", provider_id) as p1,
        open_client(provider_at[1], "provider", provider_id) as p2,
    ):
        order = await seeker_at[0].create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        for provider in (p1, p2):
            await provider.expect("work_request", work_id=order["work_id"])
        accepted = await p2.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True},
            "work_accepted",
        )
        for client in (s1, s2, p1):
            await client.expect("work_accepted", seq=1)
        yield Devices((s1, s2), (p1, p2), accepted["session_id"], seeker_id, provider_id)


async def settle(devices: Devices) -> None:
    """Let in-flight frames arrive; they stay in each client's ``received``."""
    await asyncio.gather(*(client.drain(0.5) for client in devices.everyone))


def logged(client: Client) -> list[tuple[int, str]]:
    """(seq, type) of every logged event the client received, in arrival order."""
    return [(f["seq"], f["type"]) for f in client.received if "seq" in f]


def status_updates(client: Client, message_id: str) -> list[str]:
    return [
        f["status"]
        for f in client.received
        if f["type"] == "message_status_update" and f["message_id"] == message_id
    ]


async def send_a_message(devices: Devices, text: str) -> str:
    ack = await devices.seekers[0].request(
        {"type": "chat_message", "session_id": devices.session_id, "message": text},
        "chat_message_ack",
    )
    for provider in devices.providers:
        await provider.expect("chat_message", message_id=ack["message_id"])
    message_id: str = ack["message_id"]
    return message_id


async def _every_socket_gets_every_event(devices: Devices) -> None:
    sid = devices.session_id
    s1, s2 = devices.seekers
    p1, p2 = devices.providers
    # Each from another device, each answered before the next: seq 2 to 6 in this order.
    await s1.request(
        {"type": "medium_selection", "session_id": sid, "mediums": {"call": "9876543210"}},
        "mediums_selected",
    )
    await p2.request(
        {"type": "medium_share", "session_id": sid, "mediums": {"telegram": "8765432109"}},
        "mediums_shared",
    )
    await s2.request(
        {"type": "chat_message", "session_id": sid, "message": "from the tablet"},
        "chat_message_ack",
    )
    await p1.request(
        {"type": "chat_message", "session_id": sid, "message": "from the phone"},
        "chat_message_ack",
    )
    await settle(devices)
    assert not [f for c in devices.everyone for f in c.received if f["type"] == "work_unavailable"]

    seeker_view, provider_view = logged(s1), logged(p1)
    assert [seq for seq, _ in seeker_view] == [1, 2, 3, 4, 5, 6]
    assert seeker_view == logged(s2)
    assert provider_view == logged(p2)
    assert [kind for _, kind in seeker_view] == [
        "work_accepted",
        "mediums_selected",
        "provider_mediums_shared",
        "chat_ready",
        "chat_message_ack",
        "chat_message",
    ]
    assert [kind for _, kind in provider_view] == [
        "work_accepted",
        "seeker_mediums_selected",
        "mediums_shared",
        "chat_ready",
        "chat_message",
        "chat_message_ack",
    ]
    # Same text on both devices of a role, byte for byte (no request ids were sent).
    for a, b in (devices.seekers, devices.providers):
        assert [r for r in a.raw if '"seq"' in r] == [r for r in b.raw if '"seq"' in r]


async def test_every_socket_of_a_user_gets_every_event_once(server: Server) -> None:
    async with two_devices_each((server, server), (server, server)) as devices:
        await _every_socket_gets_every_event(devices)


async def test_a_read_receipt_from_both_devices_reaches_every_device_once(
    server: Server,
) -> None:
    async with two_devices_each((server, server), (server, server)) as devices:
        mid = await send_a_message(devices, "seen?")
        await asyncio.gather(
            *(p.send({"type": "message_read", "message_id": mid}) for p in devices.providers)
        )
        await settle(devices)
    # 1.1: the recipient's devices hear of the read too (v1.0 told the sender alone).
    for client in devices.everyone:
        assert status_updates(client, mid) == ["delivered", "read"]


async def test_acks_from_either_device_count_once_per_step(server: Server) -> None:
    async with two_devices_each((server, server), (server, server)) as devices:
        p1, p2 = devices.providers
        mid = await send_a_message(devices, "on my way")
        await p2.send({"type": "message_delivered", "message_id": mid})
        for seeker in devices.seekers:
            await seeker.expect("message_status_update", status="delivered")
        await p1.send({"type": "message_read", "message_id": mid})
        await p2.send({"type": "message_delivered", "message_id": mid})  # behind: nothing
        await p2.send({"type": "message_read", "message_id": mid})  # repeated: nothing
        await settle(devices)
    for seeker in devices.seekers:
        assert status_updates(seeker, mid) == ["delivered", "read"]
        assert Counter(seq for seq, _ in logged(seeker)).most_common(1)[0][1] == 1


# --- the same across two workers -----------------------------------------------------------


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Cluster]:
    with two_workers_running(tmp_path) as running:
        yield running


@needs_postgresql_and_redis
async def test_devices_on_two_workers_each_get_every_event_once(two_workers: Cluster) -> None:
    a, b = two_workers.servers
    async with two_devices_each((a, b), (b, a)) as devices:
        await _every_socket_gets_every_event(devices)


@needs_postgresql_and_redis
async def test_a_read_receipt_from_devices_on_two_workers_reaches_the_sender_once(
    two_workers: Cluster,
) -> None:
    a, b = two_workers.servers
    async with two_devices_each((a, b), (b, a)) as devices:
        mid = await send_a_message(devices, "seen?")
        await asyncio.gather(
            *(p.send({"type": "message_read", "message_id": mid}) for p in devices.providers)
        )
        await settle(devices)
    for client in devices.everyone:
        assert status_updates(client, mid) == ["delivered", "read"]


SEEKER_AT = (12.9756, 77.6066)


def north_of(metres: float) -> dict[str, float]:
    return {"lat": SEEKER_AT[0] + metres / 111_195.0, "lng": SEEKER_AT[1]}


def seqs(client: Client, session_id: str) -> list[int]:
    return [f["seq"] for f in client.received if f.get("session_id") == session_id and "seq" in f]


@needs_postgresql_and_redis
async def test_every_device_of_both_sees_every_seq_of_a_whole_session(
    two_workers: Cluster,
) -> None:
    """PROTOCOL 3 and 5, *1.1*: through mediums, chat, receipts, arrival and the end, each
    of the four sockets (two per participant, spread over two workers) sees seq 1, 2, 3,
    ... with no hole; a read on one provider phone shows on the other; a chat ack carries
    the text and the sender's role, never a user id; and a replay from 0 is byte for byte
    what a device that sent nothing received live."""
    a, b = two_workers.servers
    async with two_devices_each((a, b), (b, a)) as devices:
        sid = devices.session_id
        s1, s2 = devices.seekers
        p1, p2 = devices.providers
        await s1.request(
            {"type": "medium_selection", "session_id": sid, "mediums": {"call": "9876543210"}},
            "mediums_selected",
        )
        await p2.request(
            {"type": "medium_share", "session_id": sid, "mediums": {"whatsapp": "8765432109"}},
            "mediums_shared",
        )
        ack = await s1.request(
            {"type": "chat_message", "session_id": sid, "message": "where are you?"},
            "chat_message_ack",
        )
        mid = ack["message_id"]
        await p1.expect("chat_message", message_id=mid)
        # The seeker's other phone learns what was sent from its own copy of the ack.
        mirrored = await s2.expect("chat_message_ack", message_id=mid)
        assert mirrored == ack
        assert (ack["sender_type"], ack["message"]) == ("seeker", "where are you?")
        # Read on provider phone 1: both steps show on provider phone 2 as well.
        await p1.send({"type": "message_read", "message_id": mid})
        for status in ("delivered", "read"):
            update = await p2.expect("message_status_update", message_id=mid, status=status)
            assert update == await s2.expect("message_status_update", status=status)
        reply = await p2.request(
            {"type": "chat_message", "session_id": sid, "message": "two minutes"},
            "chat_message_ack",
        )
        await s2.send({"type": "message_delivered", "message_id": reply["message_id"]})
        await p1.expect("message_status_update", message_id=reply["message_id"])
        await s1.send({"type": "location_update", "session_id": sid, **north_of(0)})
        await p1.send({"type": "location_update", "session_id": sid, **north_of(1000)})
        await s2.expect("distance_update")
        await p2.send({"type": "location_update", "session_id": sid, **north_of(250)})
        await s1.expect("provider_nearby")
        await p1.send({"type": "location_update", "session_id": sid, **north_of(30)})
        await s1.expect("provider_arrived")
        await p2.request({"type": "complete_session", "session_id": sid}, "session_completed")
        for client in devices.everyone:
            assert await client.closed_with() == 1000
    kinds = [f["type"] for f in s2.received if "seq" in f]
    end = len(kinds)
    assert kinds == [
        "work_accepted",
        "mediums_selected",
        "provider_mediums_shared",
        "chat_ready",
        "chat_message_ack",
        "message_status_update",
        "message_status_update",
        "chat_message",
        "message_status_update",
        "provider_nearby",
        "provider_arrived",
        "session_completed",
    ]
    for client in devices.everyone:
        assert seqs(client, sid) == list(range(1, end + 1)), client.role
    chat = [r for c in devices.everyone for r in c.raw if '"chat_message' in r]
    assert len(chat) == 8  # each of the two messages on four sockets
    for text in chat:
        assert devices.seeker_id not in text, text
        assert devices.provider_id not in text, text
    # Replay equals live, byte for byte, for each role: s2 and p1 sent no request ids
    # (nor did anyone else), so their live frames carry none either.
    for role, user_id, live in (
        ("seeker", devices.seeker_id, s2),
        ("provider", devices.provider_id, p1),
    ):
        async with open_client(b, role, user_id) as fresh:
            await fresh.send({"type": "resume", "session_id": sid, "last_seq": 0})
            await fresh.expect("resumed", last_seq=end)
        replayed = [r for r in fresh.raw if '"seq"' in r]
        assert replayed == [r for r in live.raw if '"seq"' in r], role
