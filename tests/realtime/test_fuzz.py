"""Property-based fuzzing of the WebSocket protocol against a live server (issue 12).

Hypothesis draws a frame of every inbound type, shaped by the models in
``protocol/inbound.py`` and aimed at a real session (its id, its work id, its messages, a
valid refresh token), then mutates it: wrong types, huge numbers, NaN and Infinity, deep
nesting, lone surrogates, NUL, bidi overrides, 64 KiB strings, unknown and missing keys,
broken JSON, binary frames. A seeker and a provider in a live session send them over real
sockets to ``python -m worksession serve``, on PostgreSQL and Redis when
``WORKSESSION_TEST_DATABASE_URL`` and ``WORKSESSION_TEST_REDIS_URL`` are set (as in CI),
else on the embedded SQLite and in-process broker.

Each frame is followed by a ping, so everything the server says in answer to it arrives
before that pong. What must hold, frame after frame:

- a frame the parser refuses gets exactly the error it names (``invalid_json``,
  ``unknown_type``, ``forbidden``, ``validation_error``), with the frame's request_id only
  when that is a valid one; the parser is run here on the same text to know which;
- a frame that parses gets an ack or nothing, or one error of the contract's domain codes,
  never ``internal_error``;
- no socket closes, except with 1009 for a frame over the 16 KiB limit and with 1000 after
  the session was really cancelled or completed (a new session is then set up);
- at the end the server log holds no traceback, no ERROR line and no HTTP 500.

The rate limits are raised by settings so that the fuzzer runs at full speed; the limiter
itself is tested in ``test_bad_input.py``. The size is ``WORKSESSION_FUZZ_FRAMES`` (1,500 by
default; ``make fuzz`` sends 10,000); Hypothesis is derandomized, so a run is reproducible.
``WORKSESSION_FUZZ_REPORT`` names a file for the run's numbers as JSON.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import PG_URL, REDIS_URL, discard_database_url, fresh_database_url
from tests.realtime.conftest import Server, start_server, stop_server, uid
from worksession import migrate
from worksession.protocol.inbound import (
    INBOUND_TYPES,
    BadFrame,
    CancelConnection,
    CompleteSession,
    InboundMessage,
    parse_frame,
)
from worksession.sessions.mediums import MEDIUM_KINDS

FRAMES = int(os.environ.get("WORKSESSION_FUZZ_FRAMES", "1500"))
MAX_FRAME_BYTES = 16 * 1024  # the contract's default, which the fuzzed server keeps
ANSWER_TIMEOUT_S = 15.0
ROTATE_EVERY = 500
"""A fresh session now and then keeps the event log short enough for ``resume`` from 0."""

PARSER_CODES = frozenset({"invalid_json", "unknown_type", "forbidden", "validation_error"})
DOMAIN_CODES = frozenset(
    {
        "validation_error",
        "forbidden",
        "session_not_found",
        "invalid_state",
        "work_not_found",
        "work_unavailable",
        "provider_busy",
        "seeker_busy",
        "message_not_found",
    }
)

T = TypeVar("T")


# --- placeholders: what only the live session knows, filled in when a frame is sent ------


@dataclass(frozen=True)
class Live:
    """Stands for a value of the live session, resolved at send time."""

    name: str


SESSION_ID = Live("session_id")
WORK_ID = Live("work_id")
MESSAGE_ID = Live("message_id")
LOW_SEQ = Live("low_seq")
"""A seq near the start, so that a resume replays most of the (short) log."""
TOKEN = Live("token")
REQUEST_ID = Live("request_id")


# --- strategies: well-formed frames of every type -----------------------------------------

HOSTILE_CHARS = ["\ud800", "\udfff", "\udc80", "\x00", "\x1b", "\x7f", "\u202e", "\u2066", "\n"]
HUGE_NUMBERS = [2**31, 2**31 - 1, 2**63, 2**63 - 1, -(2**63) - 1, 10**40, 1e308, -1e308, 5e-324]

session_ids = st.one_of(
    st.just(SESSION_ID), st.just(SESSION_ID), st.just(SESSION_ID), st.uuids().map(str)
)
work_ids = st.one_of(st.just(WORK_ID), st.integers(min_value=1, max_value=2**31 - 1))
message_ids = st.one_of(st.just(MESSAGE_ID), st.just(MESSAGE_ID), st.uuids().map(str))
phones = st.one_of(
    st.sampled_from(["9876543210", "+91 98765-43210", "09876543210", "919876543210", "6000000000"]),
    st.text(max_size=16),
)
mediums = st.dictionaries(st.sampled_from(MEDIUM_KINDS), phones, max_size=3)
# Near one another, so that fixes produce distances, arrivals and the events they log.
latitudes = st.one_of(st.floats(12.90, 12.99), st.floats(-90, 90))
longitudes = st.one_of(st.floats(77.55, 77.65), st.floats(-180, 180))
timestamps = st.one_of(
    st.just("2026-01-01T00:00:00Z"),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.text(max_size=30),
)
labels = st.text(min_size=1, max_size=64)
# Mostly text a person could send (no controls, no surrogates), so that most messages are
# stored and acked; unrestricted text comes too, and the mutations add the worst of it.
chat_texts = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Cf")), min_size=1, max_size=300
).filter(lambda t: not t.isspace())

FRAME_SHAPES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "ping": st.fixed_dictionaries({}),
    "work_response": st.fixed_dictionaries({"work_id": work_ids, "accepted": st.booleans()}),
    # The fuzzed session's order is accepted: a withdrawal of it, or of an id nobody has,
    # is refused, and the session goes on.
    "cancel_work": st.fixed_dictionaries({"work_id": work_ids}),
    "medium_selection": st.fixed_dictionaries({"session_id": session_ids, "mediums": mediums}),
    "medium_share": st.fixed_dictionaries({"session_id": session_ids, "mediums": mediums}),
    "location_update": st.fixed_dictionaries(
        {"session_id": session_ids, "lat": latitudes, "lng": longitudes},
        optional={"accuracy": st.floats(0, 500), "recorded_at": timestamps},
    ),
    "start_chat": st.fixed_dictionaries({"session_id": session_ids}),
    "chat_message": st.fixed_dictionaries(
        {"session_id": session_ids, "message": st.one_of(chat_texts, st.text(min_size=1))},
        optional={"client_msg_id": labels},
    ),
    "message_delivered": st.fixed_dictionaries({"message_id": message_ids}),
    "message_read": st.fixed_dictionaries({"message_id": message_ids}),
    "typing_indicator": st.fixed_dictionaries(
        {"session_id": session_ids, "is_typing": st.booleans()}
    ),
    "cancel_connection": st.fixed_dictionaries({"session_id": session_ids}),
    "complete_session": st.fixed_dictionaries({"session_id": session_ids}),
    "resume": st.fixed_dictionaries(
        {
            "session_id": session_ids,
            "last_seq": st.one_of(st.just(LOW_SEQ), st.integers(0, 2**31 - 1)),
        }
    ),
    "auth_refresh": st.fixed_dictionaries(
        {"token": st.one_of(st.just(TOKEN), st.text(min_size=1, max_size=200))}
    ),
}
# Ending the session is rare, or most frames would go to a session that just ended.
RARE_TYPES = frozenset({"cancel_connection", "complete_session"})


@st.composite
def well_formed(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(FRAME_SHAPES)))
    if kind in RARE_TYPES and draw(st.integers(0, 19)):
        kind = "ping"
    frame: dict[str, Any] = {"type": kind, **draw(FRAME_SHAPES[kind])}
    if draw(st.integers(0, 9)):
        frame["request_id"] = REQUEST_ID
    return frame


# --- strategies: mutations ----------------------------------------------------------------


@dataclass(frozen=True)
class Long:
    """A string of ``chars`` characters, made when the frame is sent (Hypothesis would
    otherwise print 64 KiB of it in every example's description)."""

    chars: int


@dataclass(frozen=True)
class Nested:
    """``depth`` levels of alternating arrays and objects, spliced into the text when it is
    sent: as Python objects they would overflow the stack of json.dumps and of Hypothesis's
    own printing of the example."""

    depth: int

    @property
    def marker(self) -> str:
        return f"\x01nested-{self.depth}\x01"

    def text(self) -> str:
        opened = "".join("[" if i % 2 else '{"k":' for i in range(self.depth))
        closed = "".join("]" if i % 2 else "}" for i in reversed(range(self.depth)))
        return opened + "0" + closed


def _splice_nested(text: str, value: Any) -> str:
    """``text`` (JSON of ``value``) with each Nested marker replaced by its nesting."""
    for depth in _nested_depths(value):
        nested = Nested(depth)
        text = text.replace(json.dumps(nested.marker), nested.text())
    return text


def _nested_depths(value: Any) -> set[int]:
    match value:
        case Nested(depth):
            return {depth}
        case dict():
            return set().union(*(_nested_depths(v) for v in value.values()))
        case list():
            return set().union(*(_nested_depths(v) for v in value))
        case _:
            return set()


hostile_strings = st.one_of(
    st.builds(
        lambda head, char, tail: head + char + tail,
        st.text(max_size=8),
        st.sampled_from(HOSTILE_CHARS),
        st.text(max_size=8),
    ),
    st.sampled_from(
        ["", " ", "x" * 65, "x" * 2001, "null", "NaN", Long(16 * 1024), Long(64 * 1024)]
    ),
)
hostile_values = st.one_of(
    hostile_strings,
    st.sampled_from(HUGE_NUMBERS),
    st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, True, False, None, 1.5]),
    st.sampled_from([10, 500, 1000, 2000, 7000]).map(Nested),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.uuids().map(str),
)


@st.composite
def mutated(draw: st.DrawFn, frame: dict[str, Any]) -> dict[str, Any]:
    frame = dict(frame)
    for _ in range(draw(st.integers(1, 3))):
        keys = list(frame)
        mutation = ["drop", "add", "replace", "replace", "replace", "type", "nest"]
        match draw(st.sampled_from(mutation)):
            case "drop" if keys:
                del frame[draw(st.sampled_from(keys))]
            case "add":
                key = draw(st.one_of(st.text(max_size=10), hostile_strings))
                frame[key] = draw(hostile_values)
            case "replace" if len(keys) > 1:
                # Not the type: the point is to reach the model of each type.
                frame[draw(st.sampled_from(keys[1:]))] = draw(hostile_values)
            case "type":
                frame["type"] = draw(
                    st.one_of(hostile_values, st.sampled_from(["PING", "chat", "error", "pong"]))
                )
            case "nest" if "mediums" in frame:
                frame["mediums"] = {draw(st.sampled_from(MEDIUM_KINDS)): draw(hostile_values)}
            case _:
                pass
    return frame


@dataclass(frozen=True)
class RawText:
    """A frame sent as it is, not as JSON of a dict."""

    text: str | bytes


raw_frames = st.one_of(
    st.builds(lambda f: RawText(json.dumps(f).encode()), st.just({"type": "ping"})),
    st.binary(max_size=64).map(RawText),
    st.sampled_from(
        [
            "",
            "null",
            "[]",
            "42",
            '"ping"',
            "{",
            '{"type":"ping"',
            '{"type":"ping"}}',
            '{"type":"ping","type":"ping"}',
            '{"type":"ping","x":NaN}',
            '{"type":"ping","x":Infinity}',
            '{"type":"ping","x":-Infinity}',
            '{"type":"ping","x":1' + "0" * 5000 + "}",
            '{"type":"ping","x":1e999999}',
            '{"type":"ping",}',
            "{'type':'ping'}",
            '{"type":"ping"} {"type":"ping"}',
            "[" * 3000 + "]" * 3000,
            '{"a":' * 1000 + "1" + "}" * 1000,
            "\ufeff" + '{"type":"ping"}',
        ]
    ).map(RawText),
    st.text(max_size=40).map(RawText),
)


@st.composite
def fuzz_frames(draw: st.DrawFn) -> tuple[str, dict[str, Any] | RawText]:
    role = draw(st.sampled_from(["seeker", "provider"]))
    choice = draw(st.integers(0, 19))
    if choice == 0:
        return role, draw(raw_frames)
    frame = draw(well_formed())
    if choice <= 7:  # two in five stay well formed, to reach the deciders with real ids
        return role, frame
    return role, draw(mutated(frame))


# --- the live side --------------------------------------------------------------------


class Socket:
    """A client socket whose frames are read as they come (a socket that stops reading is
    rightly closed as a slow consumer), with its close code once closed."""

    def __init__(self, ws: ClientConnection, role: str, user_id: str) -> None:
        self.ws, self.role, self.user_id = ws, role, user_id
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                assert isinstance(text, str), "the server sends text frames only"
                await self.frames.put(json.loads(text))
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()

    async def next(self, timeout: float = ANSWER_TIMEOUT_S) -> dict[str, Any] | None:
        """The next frame, or None once the socket closed and every frame was read."""
        get = asyncio.ensure_future(self.frames.get())
        closed = asyncio.ensure_future(self.closed.wait())
        done, _ = await asyncio.wait({get, closed}, timeout=timeout, return_when="FIRST_COMPLETED")
        if get in done:
            closed.cancel()
            return get.result()
        get.cancel()
        if closed in done:
            return None if self.frames.empty() else self.frames.get_nowait()
        raise AssertionError(f"the {self.role}'s socket fell silent for {timeout} s")

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def _connect(server: Server, role: str, user_id: str) -> Socket:
    ws = await connect(
        f"{server.ws_url}/ws/work/{role}/",
        additional_headers={"Authorization": f"Bearer {server.token(user_id, role)}"},
        max_size=2**22,
        ping_interval=None,
    )
    socket = Socket(ws, role, user_id)
    first = await socket.next()
    assert first is not None, "closed before connected"
    assert first["type"] == "connected", first
    return socket


@dataclass
class Tally:
    frames: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    acks: Counter[str] = field(default_factory=Counter)
    silent: int = 0
    closed_1009: int = 0
    sessions_ended: int = 0
    sessions: int = 0


class Fuzzer:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.tally = Tally()
        self.sockets: dict[str, Socket] = {}
        self.session_id = ""
        self.work_id = 0
        self.message_ids: list[str] = []
        self.since_rotation = 0

    async def new_session(self) -> None:
        for socket in self.sockets.values():
            await socket.close()
        seeker_id, provider_id = uid("fz-seeker"), uid("fz-provider")
        seeker = await _connect(self.server, "seeker", seeker_id)
        provider = await _connect(self.server, "provider", provider_id)
        self.sockets = {"seeker": seeker, "provider": provider}
        async with httpx.AsyncClient(base_url=self.server.base_url, timeout=10) as http:
            response = await http.post(
                "/internal/v1/work-orders",
                json={"seeker_id": seeker_id, "provider_ids": [provider_id], "details": {}},
                headers={"Authorization": f"Bearer {self.server.token('svc', 'service')}"},
            )
        assert response.status_code == 201, response.text
        self.work_id = response.json()["work_id"]
        await provider.ws.send(
            json.dumps({"type": "work_response", "work_id": self.work_id, "accepted": True})
        )
        accepted = await self._until(provider, lambda f: f["type"] == "work_accepted")
        await self._until(seeker, lambda f: f["type"] == "work_accepted")
        self.session_id = accepted["session_id"]
        self.message_ids = []
        self.since_rotation = 0
        self.tally.sessions += 1

    async def _until(
        self, socket: Socket, wanted: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        while True:
            frame = await socket.next()
            assert frame is not None, f"the {socket.role}'s socket closed ({socket.close_code})"
            self._observe(frame)
            assert frame.get("type") != "error", frame
            if wanted(frame):
                return frame

    def _observe(self, frame: dict[str, Any]) -> None:
        message_id = frame.get("message_id")
        if isinstance(message_id, str) and frame.get("type") in (
            "chat_message",
            "chat_message_ack",
        ):
            self.message_ids.append(message_id)

    def _resolve(self, value: Any, draw_index: int, role: str, request_id: str) -> Any:
        match value:
            case Live("session_id"):
                return self.session_id
            case Live("work_id"):
                return self.work_id
            case Live("message_id"):
                if not self.message_ids:
                    return str(uuid.uuid4())
                return self.message_ids[draw_index % len(self.message_ids)]
            case Live("low_seq"):
                return draw_index % 8
            case Live("token"):
                return self.server.token(self.sockets[role].user_id, role)
            case Live("request_id"):
                return request_id
            case Nested():
                return value.marker
            case Long(chars):
                return "x" * chars
            case dict():
                return {
                    self._resolve(k, draw_index, role, request_id): self._resolve(
                        v, draw_index, role, request_id
                    )
                    for k, v in value.items()
                }
            case list():
                return [self._resolve(v, draw_index, role, request_id) for v in value]
            case _:
                return value

    async def send(self, role: str, frame: dict[str, Any] | RawText) -> None:
        if self.since_rotation >= ROTATE_EVERY:
            await self.new_session()
        self.since_rotation += 1
        n = self.tally.frames
        self.tally.frames += 1
        request_id = f"fz-{n}"
        if isinstance(frame, RawText):
            text: str | bytes = frame.text
            self.tally.by_type["<raw>"] += 1
        else:
            resolved = self._resolve(frame, n, role, request_id)
            # ASCII escapes: a lone surrogate travels as the JSON text "\ud800", as a
            # hostile client would send it (the text itself stays valid UTF-8).
            text = _splice_nested(json.dumps(resolved, ensure_ascii=True), frame)
            kind = resolved.get("type")
            known = isinstance(kind, str) and kind in FRAME_SHAPES
            self.tally.by_type[kind if known else "<bad type>"] += 1
        size = len(text if isinstance(text, bytes) else text.encode())
        socket = self.sockets[role]
        try:
            await socket.ws.send(text)
        except ConnectionClosed:
            # The server may close on a frame too big before the client finished sending.
            if size <= MAX_FRAME_BYTES:
                raise
        if size > MAX_FRAME_BYTES:
            await self._expect_close(socket, 1009, text)
            self.tally.closed_1009 += 1
            self.sockets[role] = await _connect(self.server, role, socket.user_id)
            return
        try:
            expected: InboundMessage | BadFrame = parse_frame(text, role=role)
        except BadFrame as bad:
            expected = bad
        if _ends_the_session(expected, role, self.session_id):
            await self._expect_end(socket, text)
            return
        sync = f"sync-{n}"
        try:
            await socket.ws.send(json.dumps({"type": "ping", "request_id": sync}))
        except ConnectionClosed:
            raise AssertionError(
                f"closed with {socket.ws.close_code} after {text!r:.300}"
            ) from None
        answers: list[dict[str, Any]] = []
        while True:
            got = await socket.next()
            assert got is not None, f"closed with {socket.close_code} after {text!r:.300}"
            self._observe(got)
            if got.get("type") == "pong" and got.get("request_id") == sync:
                break
            answers.append(got)
        self._check(expected, request_id, answers, text)
        other = self.sockets["provider" if role == "seeker" else "seeker"]
        while not other.frames.empty():
            frame_seen = other.frames.get_nowait()
            self._observe(frame_seen)
            assert frame_seen.get("type") != "error", (frame_seen, text)

    def _check(
        self,
        expected: InboundMessage | BadFrame,
        request_id: str,
        answers: list[dict[str, Any]],
        text: str | bytes,
    ) -> None:
        errors = [a for a in answers if a.get("type") == "error"]
        assert len(errors) <= 1, (errors, text)
        if isinstance(expected, BadFrame):
            assert len(errors) == 1, (answers, text)
            [error] = errors
            assert error["code"] == expected.error.code, (error, text)
            assert error.get("request_id") == expected.request_id, (error, text)
        elif errors:
            [error] = errors
            assert error["code"] in DOMAIN_CODES, (error, text)
            assert error.get("request_id") == expected.request_id, (error, text)
        if errors:
            self.tally.errors[errors[0]["code"]] += 1
            return
        acks = [a for a in answers if a.get("request_id") == request_id]
        if acks:
            self.tally.acks[acks[-1]["type"]] += 1
        else:
            self.tally.silent += 1

    async def _expect_close(self, socket: Socket, code: int, text: str | bytes) -> None:
        while (frame := await socket.next()) is not None:
            self._observe(frame)
            assert frame.get("type") != "error", (frame, text[:300])
        assert socket.close_code == code, (socket.close_code, text[:300])

    async def _expect_end(self, socket: Socket, text: str | bytes) -> None:
        """A real cancel or complete: the ending event, then 1000 on both sockets."""
        ending = {"connection_cancelled", "session_completed"}
        seen: set[str] = set()
        for each in self.sockets.values():
            while (frame := await each.next()) is not None:
                self._observe(frame)
                assert frame.get("type") != "error", (frame, text)
                if frame.get("type") in ending:
                    seen.add(each.role)
            assert each.close_code == 1000, (each.role, each.close_code, text)
        assert seen == {"seeker", "provider"}, (seen, text)
        self.tally.acks["session_ended"] += 1
        self.tally.sessions_ended += 1
        await self.new_session()


def _ends_the_session(expected: InboundMessage | BadFrame, role: str, session_id: str) -> bool:
    if isinstance(expected, CancelConnection):
        return str(expected.session_id) == session_id
    if isinstance(expected, CompleteSession):
        return str(expected.session_id) == session_id and role == "provider"
    return False


# --- running it -----------------------------------------------------------------------


class LoopThread:
    """An event loop in a thread of its own: Hypothesis drives examples synchronously,
    and the sockets must outlive each example."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        async def cancel_the_rest() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the fuzzer: PostgreSQL + Redis when the run has them, with rate
    limits far above what one client sending in lockstep can reach."""
    log_dir = tmp_path_factory.mktemp("fuzz")
    backend = "postgresql" if PG_URL else "sqlite"
    url = fresh_database_url(backend, log_dir)
    migrate.upgrade(url)
    broker = (
        {"redis_url": REDIS_URL, "redis_prefix": f"fuzz-{uuid.uuid4().hex[:8]}"}
        if REDIS_URL and PG_URL
        else {}
    )
    server = start_server(
        url,
        log_dir,
        rate_limit_per_s="100000",
        rate_limit_burst="100000",
        user_rate_limit_per_s="100000",
        user_rate_limit_burst="100000",
        **broker,
    )
    try:
        yield server
    finally:
        stop_server(server)
        discard_database_url(url)


def test_every_inbound_type_is_fuzzed() -> None:
    assert set(FRAME_SHAPES) == INBOUND_TYPES


@pytest.mark.timeout(300 + FRAMES // 10)
def test_no_frame_breaks_the_server(fuzzed_server: Server) -> None:
    runner = LoopThread()
    fuzzer = Fuzzer(fuzzed_server)
    started = time.monotonic()
    try:
        runner.run(fuzzer.new_session())

        @settings(
            max_examples=FRAMES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(fuzz_frames())
        def one_frame(drawn: tuple[str, dict[str, Any] | RawText]) -> None:
            role, frame = drawn
            runner.run(fuzzer.send(role, frame), timeout=ANSWER_TIMEOUT_S * 4)

        one_frame()
    finally:
        elapsed = time.monotonic() - started
        _report(fuzzer.tally, elapsed, fuzzed_server)
        runner.run(_close_all(fuzzer))
        runner.stop()

    log = fuzzed_server.log()
    assert "Traceback" not in log, log[-5000:]
    assert not re.search(r" ERROR ", log), log[-5000:]
    assert not re.search(r'HTTP/1\.1" 5\d\d', log), log[-5000:]
    assert fuzzer.tally.frames >= FRAMES
    # The run reached past the parser: deciders answered with acks and domain errors.
    assert fuzzer.tally.acks, fuzzer.tally
    assert set(fuzzer.tally.errors) - PARSER_CODES, fuzzer.tally


async def _close_all(fuzzer: Fuzzer) -> None:
    for socket in fuzzer.sockets.values():
        await socket.close()


def _report(tally: Tally, elapsed: float, server: Server) -> None:
    numbers = {
        "backend": "postgresql+redis"
        if PG_URL and REDIS_URL
        else ("postgresql" if PG_URL else "sqlite"),
        "frames_sent": tally.frames,
        "seconds": round(elapsed, 1),
        "frames_per_s": round(tally.frames / elapsed, 1) if elapsed else None,
        "errors_by_code": dict(sorted(tally.errors.items())),
        "acks_by_type": dict(sorted(tally.acks.items())),
        "no_direct_answer": tally.silent,
        "closed_1009": tally.closed_1009,
        "sessions": tally.sessions,
        "sessions_ended_by_fuzz": tally.sessions_ended,
        "frames_by_type": dict(sorted(tally.by_type.items())),
    }
    print("\nfuzz:", json.dumps(numbers, indent=1))
    if report := os.environ.get("WORKSESSION_FUZZ_REPORT"):
        Path(report).write_text(json.dumps(numbers, indent=1) + "\n")
