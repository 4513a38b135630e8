"""The expected world of the stateful model test: users, sockets, orders, sessions, messages.

Pure bookkeeping plus the socket reader; the rules and the checks live in ``test_model``.
Everything here runs on the model's one event loop, so no state is shared across threads.

What a socket must see of a session (the 1.1 rule, PROTOCOL 3): every logged event, each
rendered for the socket's role; :func:`frame_type` says which frame from the contract,
independently of the service's renderer (``eventlog/render.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

WAIT_S = 15.0
"""How long a check waits for a frame it expects: generous for a loaded machine, and only
ever spent when something is wrong."""

EPHEMERAL = frozenset({"distance_update", "typing_indicator", "peer_presence"})
LIVE = ("waiting", "active")
TERMINAL = frozenset({"connection_cancelled", "session_completed"})
RANK = {
    "message": {"sent": 0, "delivered": 1, "read": 2},
    "session": {"waiting": 0, "active": 1, "cancelled": 2, "completed": 2},
    "order": {
        "pending": 0,
        "accepted": 1,
        "rejected": 2,
        "expired": 2,
        "withdrawn": 2,
        "cancelled": 2,
        "completed": 2,
    },
}
"""How far along each status is: a status seen once is never followed by a lower rank (an
accepted order ends cancelled or completed, both terminal)."""


def frame_type(kind: str, data: dict[str, Any], role: str) -> str:
    """The ``type`` of the frame ``role`` receives for a logged event (PROTOCOL 4-5)."""
    mine = data.get("sender_type") == role
    return {
        "mediums_selected": "mediums_selected" if role == "seeker" else "seeker_mediums_selected",
        "mediums_shared": "mediums_shared" if role == "provider" else "provider_mediums_shared",
        "chat_message": "chat_message_ack" if mine else "chat_message",
        "message_status": "message_status_update",
    }.get(kind, kind)


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine on a 6371 km sphere, as the contract defines the distance."""
    lat1, lng1, lat2, lng2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    )
    return 2 * 6_371_000 * math.asin(math.sqrt(h))


@dataclass
class User:
    id: str
    role: str
    sockets_opened: int = 0
    max_seen: dict[str, int] = field(default_factory=dict)
    """Per session, the highest seq any socket of this user received: what a client app
    would keep to resume from after a reconnect."""


@dataclass
class Order:
    work_id: int
    seeker: User
    offers: dict[str, str]
    """provider id -> offer status (offered, accepted, declined, withdrawn)."""
    status: str = "pending"


@dataclass
class Message:
    message_id: str
    session_id: str
    sender_type: str
    client_msg_id: str | None
    seq: int
    status: str = "sent"


@dataclass
class Session:
    session_id: str
    work_id: int
    seeker: User
    provider: User
    state: str = "waiting"
    kinds: list[str] = field(default_factory=lambda: ["work_accepted"])
    """The kinds of the events the session's log must hold, in order."""
    chat_room: bool = False
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)
    acks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(sender user id, client_msg_id) -> the ack that stored the message."""

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def participant(self, role: str) -> User:
        return self.seeker if role == "seeker" else self.provider


@dataclass(frozen=True)
class Replay:
    """A ``resume`` on its way: what the socket had when it asked."""

    session_id: str
    last_seq: int
    seen: frozenset[int]
    floor: int
    """The last seq of the session the socket had live (its baseline or its newest)."""
    log_end: int
    """The last seq of the session's log when the socket asked."""


@dataclass
class Sock:
    """One client socket: a reader task keeps every frame; checks digest them later."""

    name: str
    user: User
    ws: ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    done: bool = False
    retired: bool = False
    """Closed by the client, or closed by the server and checked: no longer watched."""
    follows: dict[str, int] = field(default_factory=dict)
    """Session id -> the seq after which this socket must see every event for its role."""
    follows_live: set[str] = field(default_factory=set)
    """Sessions this socket followed while live: their end must close it with 1000."""
    expected_others: Counter[tuple[str, int]] = field(default_factory=Counter)
    """Frames outside any session's log (work_request, work_unavailable, ...) still due."""
    seen: dict[str, list[int]] = field(default_factory=dict)
    terminal_seen: bool = False
    re_answers: set[str] = field(default_factory=set)
    """request_ids whose answer repeats an old event (a chat retry): not part of the stream."""
    replay: Replay | None = None
    replayed: list[int] = field(default_factory=list)
    cursor: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                assert isinstance(text, str)
                self.frames.append(json.loads(text))
                self._arrived.set()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.done = True
            self._arrived.set()

    @property
    def open(self) -> bool:
        return not self.done and not self.retired

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def wait_until(self, ready: Any, what: str, timeout: float = WAIT_S) -> None:
        """Until ``ready()`` holds; fails naming ``what`` after ``timeout`` or on close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            if self.done:
                raise AssertionError(f"{self.name} closed ({self.close_code}) before {what}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {what} within {timeout}s")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def answer(self, request_id: str, timeout: float = WAIT_S) -> dict[str, Any]:
        """The frame that carries ``request_id`` (the first one)."""
        found: list[dict[str, Any]] = []

        def ready() -> bool:
            found[:] = [f for f in self.frames if f.get("request_id") == request_id]
            return bool(found)

        await self.wait_until(ready, f"answer to {request_id}", timeout)
        return found[0]

    async def closed(self, timeout: float = WAIT_S) -> int | None:
        await self.wait_until(lambda: self.done, "close", timeout)
        return self.close_code

    async def shut(self) -> None:
        self.retired = True
        await self.ws.close()
        if self._reader is not None:
            await self._reader
