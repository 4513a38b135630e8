"""Presence on its own: the pure state of one watch fed with counts and times, and the
worker's task over the in-process broker with sockets that keep what they were sent."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import pytest

from tests.unit.test_connection import FakeSocket
from worksession.eventlog.events import LoggedEvent
from worksession.kit.broker import MemoryBroker
from worksession.realtime.connections import Connection, Hub, SendEvent
from worksession.realtime.presence import GRACE_S, PeerWatch, Presence

SESSION = uuid.UUID("6f1c3a52-0000-4000-8000-000000000002")
OTHER = uuid.UUID("6f1c3a52-0000-4000-8000-000000000003")
AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

# --- PeerWatch ---------------------------------------------------------------------------


def feed(watch: PeerWatch, readings: Sequence[tuple[float, int]]) -> list[tuple[float, bool]]:
    """The frames ``readings`` (time, count) make the watch send, with their times."""
    frames = []
    for now, count in readings:
        online = watch.observe(count, now)
        if online is not None:
            frames.append((now, online))
    return frames


def test_a_first_socket_is_told_at_once() -> None:
    assert feed(PeerWatch(online=False), [(0, 0), (1, 0), (2, 1), (3, 2)]) == [(2, True)]


def test_the_last_socket_gone_is_told_after_the_grace() -> None:
    readings = [(float(t), 0) for t in range(0, 8)]
    assert feed(PeerWatch(online=True), readings) == [(GRACE_S, False)]


def test_the_grace_counts_from_the_first_reading_of_zero() -> None:
    readings = [(0.0, 1), (0.5, 0), (1.5, 0), (5.4, 0), (5.5, 0), (9.0, 0)]
    assert feed(PeerWatch(online=True), readings) == [(5.5, False)]


def test_a_reconnect_within_the_grace_says_nothing() -> None:
    readings = [(0.0, 0), (4.0, 0), (4.5, 1), (5.0, 1), (6.0, 0), (10.0, 0), (11.0, 0)]
    # Back at 4.5 s: no frame; gone again at 6 s: false 5 s after that, not before.
    assert feed(PeerWatch(online=True), readings) == [(11.0, False)]


def test_each_change_is_told_once() -> None:
    readings = [(0, 1), (1, 0), (6, 0), (7, 0), (8, 3), (9, 1), (10, 0), (15, 0)]
    assert feed(PeerWatch(online=False), readings) == [
        (0, True),
        (6, False),
        (8, True),
        (15, False),
    ]


# --- the worker's task -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Sessions:
    """The live sessions the task may read back: id -> (seeker_id, provider_id)."""

    def __init__(self) -> None:
        self.live: dict[uuid.UUID, tuple[str, str]] = {}
        self.asked: list[set[uuid.UUID]] = []

    async def peers_of(self, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
        self.asked.append(set(ids))
        return {i: self.live[i] for i in ids if i in self.live}


class CountingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.broken = False

    async def count_online(self, groups: Sequence[str]) -> dict[str, int]:
        self.calls.append(list(groups))
        if self.broken:
            raise ConnectionError("redis away")
        return await super().count_online(groups)


async def _no_events(*_args: object) -> list[LoggedEvent]:
    return []


def socket_of(role: str, user_id: str) -> tuple[Connection, FakeSocket]:
    socket = FakeSocket()
    connection = Connection(socket, user_id=user_id, role=role, fetch_events=_no_events)
    connection.start(baseline={})
    return connection, socket


async def presence_frames(socket: FakeSocket) -> list[dict[str, object]]:
    await asyncio.sleep(0)  # the writer task sends what was queued
    await asyncio.sleep(0)
    return [f for f in map(json.loads, socket.sent) if f["type"] == "peer_presence"]


@pytest.fixture
def world() -> tuple[CountingBroker, Sessions, Clock, Presence]:
    broker, sessions, clock = CountingBroker(), Sessions(), Clock()
    return broker, sessions, clock, Presence(broker, sessions.peers_of, clock=clock)


async def test_a_watched_peer_going_and_coming_back(
    world: tuple[CountingBroker, Sessions, Clock, Presence],
) -> None:
    broker, _, clock, presence = world
    seeker, socket = socket_of("seeker", "s-1")
    await broker.join("ws:provider:p-1", "socket-p", 5)
    assert await presence.is_online("provider", "p-1")
    presence.watch(seeker, SESSION, "provider", "p-1", online=True)

    await presence.tick()
    await broker.leave("ws:provider:p-1", "socket-p")
    for second in range(1, 7):
        clock.now = float(second)
        await presence.tick()
        if second < 6:
            assert await presence_frames(socket) == [], second
    assert await presence_frames(socket) == [
        {"type": "peer_presence", "session_id": str(SESSION), "online": False}
    ]

    await broker.join("ws:provider:p-1", "socket-q", 5)
    clock.now = 7.0
    await presence.tick()
    assert [f["online"] for f in await presence_frames(socket)] == [False, True]


async def test_one_broker_call_per_tick_for_every_watch(
    world: tuple[CountingBroker, Sessions, Clock, Presence],
) -> None:
    broker, _, _, presence = world
    for i in range(50):
        connection, _ = socket_of("seeker", f"s-{i}")
        presence.watch(connection, uuid.uuid4(), "provider", f"p-{i % 10}", online=False)
    await presence.tick()  # the tick the watches began in: not fed yet
    await presence.tick()
    assert len(broker.calls) == 2
    assert len(broker.calls[-1]) == 10  # each peer's group read once


async def test_nothing_is_read_without_a_watch(
    world: tuple[CountingBroker, Sessions, Clock, Presence],
) -> None:
    broker, sessions, _, presence = world
    for _ in range(3):
        await presence.tick()
    assert broker.calls == []
    assert sessions.asked == []


async def test_a_session_that_starts_is_read_back_and_watched(
    world: tuple[CountingBroker, Sessions, Clock, Presence],
) -> None:
    _, sessions, _, presence = world
    provider, _ = socket_of("provider", "p-1")
    provider.session_seen = lambda sid, live: presence.session_seen(provider, sid, live)
    sessions.live[SESSION] = ("s-1", "p-1")
    accepted = LoggedEvent(
        SESSION, 1, "work_accepted", {"work_id": 1, "connection_state": "waiting"}, AT
    )
    provider.offer(SendEvent(accepted))
    await asyncio.sleep(0)

    await presence.tick()
    assert sessions.asked == [{SESSION}]
    assert presence.watched(provider) == {SESSION: "ws:seeker:s-1"}

    ended = LoggedEvent(SESSION, 2, "session_completed", {}, AT)
    provider.offer(SendEvent(ended))
    await asyncio.sleep(0)
    assert presence.watched(provider) == {}


async def test_an_ended_session_read_back_is_not_watched(
    world: tuple[CountingBroker, Sessions, Clock, Presence],
) -> None:
    _, sessions, _, presence = world
    seeker, _ = socket_of("seeker", "s-1")
    presence.session_seen(seeker, OTHER, True)  # replayed from an old session
    await presence.tick()
    assert sessions.asked == [{OTHER}]
    assert presence.watched(seeker) == {}
    await presence.tick()
    assert sessions.asked == [{OTHER}]  # asked once


async def test_a_broker_that_cannot_count_changes_nothing(
    world: tuple[CountingBroker, Sessions, Clock, Presence],
) -> None:
    broker, _, clock, presence = world
    seeker, socket = socket_of("seeker", "s-1")
    presence.watch(seeker, SESSION, "provider", "p-1", online=True)
    broker.broken = True
    assert not await presence.is_online("provider", "p-1")  # the snapshot's fallback
    for second in range(10):
        clock.now = float(second)
        await presence.tick()
    assert await presence_frames(socket) == []


async def test_a_closed_socket_is_no_longer_watched(
    world: tuple[CountingBroker, Sessions, Clock, Presence],
) -> None:
    broker, _, _, presence = world
    seeker, _ = socket_of("seeker", "s-1")
    presence.watch(seeker, SESSION, "provider", "p-1", online=True)
    presence.forget(seeker)
    await presence.tick()
    assert broker.calls == []


async def test_a_session_started_with_the_peer_away_tells_it_after_the_grace(
    world: tuple[CountingBroker, Sessions, Clock, Presence],
) -> None:
    """A new session starts from "online" (its peer just took part in it): a peer gone
    already, or leaving right after, is told like any leave."""
    _, sessions, clock, presence = world
    provider, socket = socket_of("provider", "p-1")
    sessions.live[SESSION] = ("s-1", "p-1")
    presence.session_seen(provider, SESSION, True)
    for second in range(7):
        clock.now = float(second)
        await presence.tick()
    assert await presence_frames(socket) == [
        {"type": "peer_presence", "session_id": str(SESSION), "online": False}
    ]


async def test_the_hub_counts_its_sockets_again_after_an_outage() -> None:
    """Redis may have lost the groups (or dropped this worker's members while its liveness
    key lapsed): a resync joins every local socket again, but not one that left meanwhile."""
    broker = MemoryBroker()
    left: list[str] = []

    async def leave(group: str, member: str) -> int:
        left.append(member)
        return await broker.leave(group, member)

    hub = Hub(broker.subscribe, broker.unsubscribe, join=broker.join, leave=leave)
    staying, _ = socket_of("seeker", "s-1")
    going, _ = socket_of("provider", "p-1")
    await hub.register(staying)
    await hub.register(going)
    await broker.close()  # forgets every group, as a Redis restart would
    assert await broker.count_online(["ws:seeker:s-1"]) == {"ws:seeker:s-1": 0}

    hub.resync()
    await hub.unregister(going)
    await asyncio.sleep(0.01)
    counts = await broker.count_online(["ws:seeker:s-1", "ws:provider:p-1"])
    assert counts == {"ws:seeker:s-1": 1, "ws:provider:p-1": 0}
    assert going.id in left


async def test_a_broker_back_from_an_outage_tells_nobody_false_while_workers_recount(
    world: tuple[CountingBroker, Sessions, Clock, Presence],
) -> None:
    """A restarted Redis lost the groups: the other workers count their sockets again only
    after their own reconnect, so a 0 read during the recovery proves nothing."""
    broker, _, clock, presence = world
    seeker, socket = socket_of("seeker", "s-1")
    presence.watch(seeker, SESSION, "provider", "p-1", online=True)
    await presence.tick()
    presence.broker_recovered(recovery_s=10)
    for second in range(1, 10):  # the peer's worker has not joined its socket again yet
        clock.now = float(second)
        await presence.tick()
    await broker.join("ws:provider:p-1", "socket-p", 5)
    clock.now = 10.0
    await presence.tick()
    assert await presence_frames(socket) == []
    # Once recovered, a 0 is a leave again, told after the grace.
    await broker.leave("ws:provider:p-1", "socket-p")
    for second in range(11, 18):
        clock.now = float(second)
        await presence.tick()
    assert await presence_frames(socket) == [
        {"type": "peer_presence", "session_id": str(SESSION), "online": False}
    ]


async def test_a_closing_socket_is_never_watched_again(
    world: tuple[CountingBroker, Sessions, Clock, Presence],
) -> None:
    """A disconnect racing a tick: the closed socket's watch goes at the next tick, and a
    session it sees start after that is not watched (nothing would ever forget it)."""
    broker, sessions, _, presence = world
    seeker, _ = socket_of("seeker", "s-1")
    presence.watch(seeker, SESSION, "provider", "p-1", online=True)
    await seeker.wait_closed()
    sessions.live[OTHER] = ("s-1", "p-2")
    presence.session_seen(seeker, OTHER, True)
    await presence.tick()
    await presence.tick()
    assert presence.watched(seeker) == {}
    assert sessions.asked == []
    assert broker.calls == []


async def test_a_resync_during_a_rejoin_counts_every_socket_once_more() -> None:
    """Redis went again under a running rejoin, losing what it had counted: the second
    comeback's rejoin is not skipped."""
    broker = MemoryBroker()
    gate = asyncio.Event()
    joined: list[str] = []

    async def slow_join(group: str, member: str, limit: int) -> int:
        joined.append(member)
        if len(joined) == 2 and not gate.is_set():
            await gate.wait()  # the first rejoin is still running
        return await broker.join(group, member, limit)

    hub = Hub(broker.subscribe, broker.unsubscribe, join=slow_join, leave=broker.leave)
    sockets = [socket_of("seeker", f"s-{i}")[0] for i in range(2)]
    gate.set()
    for connection in sockets:
        await hub.register(connection)
    joined.clear()
    gate.clear()
    await broker.close()
    hub.resync()
    await asyncio.sleep(0.01)
    await broker.close()  # lost again while the rejoin waits
    hub.resync()
    gate.set()
    await asyncio.sleep(0.05)
    counts = await broker.count_online(["ws:seeker:s-0", "ws:seeker:s-1"])
    assert counts == {"ws:seeker:s-0": 1, "ws:seeker:s-1": 1}
    assert len(joined) == 4
