"""Local sockets, their writer tasks, and the fan-out from the broker to them.

One broker subscription per worker process feeds every local socket (the encode/broadcaster
pattern): the :class:`Hub` subscribes a user's channel when that user's first socket on
this worker connects and unsubscribes when the last one leaves. Each :class:`Connection`
has at most one writer task draining a bounded queue; a socket whose queue stays full is
closed with 1008 instead of growing memory.

The writer task exists only while frames wait, so an idle socket costs no task.

Each connection also tracks, per session, which ``seq`` numbers it has sent. An event it
has already sent is dropped (the requester gets its answer directly, then the broker's
copy); an event that skips ahead makes the writer read the missing ones from the log
first, so a message the broker lost never shows up as a hole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from starlette.websockets import WebSocketDisconnect

from worksession.errors import WorksessionError
from worksession.eventlog.events import LoggedEvent
from worksession.eventlog.outbox import decode, user_channel
from worksession.eventlog.render import TERMINAL_KINDS, render
from worksession.kit.db import is_database_unavailable
from worksession.ops import metrics
from worksession.protocol.outbound import ErrorFrame, Outbound, Resumed, encode, with_request_id
from worksession.realtime.ratelimit import TokenBucket

logger = logging.getLogger(__name__)

FetchEvents = Callable[[uuid.UUID, int, int | None, int], Awaitable[list[LoggedEvent]]]
"""(session_id, after_seq, before_seq or None, limit) -> the first ``limit`` logged events
in between, in order (one page: fewer than ``limit`` means there are no more)."""

LiveSessionOf = Callable[[], Awaitable[uuid.UUID | None]]
"""The id of the user's live session, if any (for a resync after a broker outage)."""

SessionSeen = Callable[[uuid.UUID, bool], None]
"""Told (session_id, True) when a socket sent a session's ``work_accepted``, (session_id,
False) when it sent its end, however the event reached it (presence follows it)."""

CLOSE_SESSION_ENDED = 1000
CLOSE_POLICY = 1008
CLOSE_SERVER_ERROR = 1011
CLOSE_RESTARTING = 1012
CLOSE_UNAUTHENTICATED = 4401
CLOSE_REPLACED = 4409

FIRST_FRAME_HOLD_S = 2.0
"""How long a socket that opened on a live session keeps that session's news back while it
waits for the client's first frame. A reconnecting client's first frame is ``resume``, and
its replay must come before anything live (*1.1*: strictly in order); two seconds covers a
slow mobile round trip, and a client that sends nothing costs its events that much delay."""


class Socket(Protocol):
    """What a connection needs of a WebSocket (Starlette's satisfies it)."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class SendFrame:
    text: str


@dataclass(frozen=True, slots=True)
class SendEvent:
    event: LoggedEvent
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Replay:
    session_id: uuid.UUID
    after_seq: int
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Resync:
    """The broker was away: send every logged event this socket may have missed."""


Item = SendFrame | SendEvent | Replay | Resync


@dataclass(slots=True)
class SentRange:
    """This socket has sent every event of a session with ``low < seq <= high``."""

    low: int
    high: int


class Connection:
    def __init__(
        self,
        socket: Socket,
        *,
        user_id: str,
        role: str,
        fetch_events: FetchEvents,
        live_session_of: LiveSessionOf | None = None,
        queue_size: int = 256,
        page_size: int = 200,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.socket = socket
        self.user_id = user_id
        self.role = role
        self.channel = user_channel(role, user_id)
        self._fetch = fetch_events
        self._live_session_of = live_session_of
        self._pending: deque[Item] = deque()
        self._held: deque[Item] | None = None
        self._hold_timer: asyncio.TimerHandle | None = None
        self._queue_size = queue_size
        self._page_size = page_size
        self._started = False
        self._sent: dict[uuid.UUID, SentRange] = {}
        self._answers: dict[tuple[uuid.UUID, int], str] = {}
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.user_bucket: TokenBucket | None = None
        """The frame budget this socket shares with the user's other sockets here (set
        by the hub)."""
        self.session_seen: SessionSeen | None = None

    # --- called from the reader, the hub and timers (never block) -----------------------

    def start(self, *, baseline: dict[uuid.UUID, int], hold_s: float = FIRST_FRAME_HOLD_S) -> None:
        """Begin writing. ``baseline``: per session, the last seq the client already has
        (from the ``connected`` snapshot); older events are not sent again unasked.

        A socket that opens on a live session holds what is queued until the client's
        first frame has been handled (:meth:`release`) or ``hold_s`` passes: a ``resume``
        sent first is replayed ahead of the events that arrived meanwhile, which then
        follow it (those it replayed are dropped as sent)."""
        for session_id, seq in baseline.items():
            self._sent[session_id] = SentRange(seq, seq)
        self._started = True
        if baseline and hold_s > 0:
            self._held, self._pending = self._pending, deque()
            self._hold_timer = asyncio.get_running_loop().call_later(hold_s, self.release)
        self._wake_writer()

    def release(self) -> None:
        """The client's first frame was handled (or it took too long): what was held
        follows whatever that frame queued (a replay)."""
        held, self._held = self._held, None
        self._cancel_hold_timer()
        if held is None or self.closing:
            return
        self._pending.extend(held)
        self._wake_writer()

    def offer(self, item: Item) -> None:
        """Queue ``item``; a client too slow to keep its queue from filling is cut off."""
        if self.closed.is_set() or self._closing is not None:
            return
        held = self._held
        if len(self._pending) + (len(held) if held is not None else 0) >= self._queue_size:
            logger.warning("closing a slow consumer (%s, queue full)", self.role)
            self.close_soon(CLOSE_POLICY, "slow consumer")
            return
        if held is not None and not isinstance(item, Replay):
            held.append(item)
            return
        self._pending.append(item)
        self._wake_writer()

    def _wake_writer(self) -> None:
        # The writer runs only while there is something to write: an idle socket holds
        # no task (and no coroutine frame) of its own. A closing socket gets no new one.
        if self.closing or not (self._started and self._pending):
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop())

    def send(self, frame: Outbound, request_id: str | None = None) -> None:
        text = encode(frame)
        self.offer(SendFrame(with_request_id(text, request_id)))

    @property
    def closing(self) -> bool:
        """A close has begun (or ended): nothing more may be sent on this socket."""
        return self._closing is not None or self.closed.is_set()

    def close_soon(self, code: int, reason: str) -> None:
        """Close now, from outside the writer: whatever is still queued is dropped."""
        if self._closing is None and not self.closed.is_set():
            self._closing = asyncio.create_task(self._close(code, reason))

    def _cancel_hold_timer(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    async def wait_closed(self) -> None:
        """Stop writing and wait for the writer (the reader calls this on disconnect)."""
        self._cancel_hold_timer()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        for task in (self._writer, self._closing):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.closed.set()

    # --- the writer ----------------------------------------------------------------------

    async def _close(self, code: int, reason: str) -> None:
        self._cancel_hold_timer()
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        self.closed.set()
        with contextlib.suppress(Exception):  # the peer may already be gone
            await self.socket.close(code, reason)

    async def _write_loop(self) -> None:
        try:
            while self._pending:
                item = self._pending.popleft()
                match item:
                    case SendFrame(text):
                        await self._write(text)
                    case SendEvent(event, request_id):
                        delivered = await self._deliver(event, request_id)
                        if delivered and event.kind in TERMINAL_KINDS:
                            await self._close(CLOSE_SESSION_ENDED, "session ended")
                            return
                    case Replay(session_id, after_seq, request_id):
                        await self._replay(session_id, after_seq, request_id)
                    case Resync():
                        if await self._resync():
                            return
        except asyncio.CancelledError:
            raise
        except OSError:  # the peer went away mid-send; the reader sees the disconnect
            self.closed.set()
        except Exception:
            # A bug (say, an event this version cannot render): say so, and close with the
            # code that tells the client to reconnect and resume rather than go silent.
            logger.exception("writer failed; closing the socket with 1011")
            await self._close(CLOSE_SERVER_ERROR, "internal error")

    def expect_answer(self, session_id: uuid.UUID, seq: int, request_id: str) -> None:
        """The event ``seq`` answers a frame of this socket: whichever way it reaches the
        socket first (directly, by the broker, by a gap fill), it carries ``request_id``."""
        self._answers[(session_id, seq)] = request_id

    def forget_answer(self, session_id: uuid.UUID, seq: int) -> None:
        self._answers.pop((session_id, seq), None)

    async def _write(self, text: str) -> None:
        try:
            await self.socket.send_text(text)
        except WebSocketDisconnect as exc:
            raise ConnectionResetError("the peer went away mid-send") from exc
        except RuntimeError as exc:
            # The server closed the socket underneath us (a keepalive ping timed out);
            # uvicorn says so with a RuntimeError. That is the peer being gone, not a bug.
            if "websocket.close" not in str(exc):
                raise
            raise ConnectionResetError("the socket is already closed") from exc
        metrics.frame_out(text)

    async def _send_event(self, event: LoggedEvent, request_id: str | None = None) -> None:
        request_id = self._answers.pop((event.session_id, event.seq), None) or request_id
        text = encode(render(event, self.role))
        await self._write(with_request_id(text, request_id))
        if self.session_seen is not None:
            if event.kind == "work_accepted":
                self.session_seen(event.session_id, True)
            elif event.kind in TERMINAL_KINDS:
                self.session_seen(event.session_id, False)

    async def _deliver(self, event: LoggedEvent, request_id: str | None = None) -> bool:
        """Send ``event`` unless already sent, after any events before it that this socket
        has not sent; returns whether the socket has now sent it, here or before (a live
        terminal event that a replay sent first still ends the socket)."""
        sent = self._sent.get(event.session_id)
        if sent is None:
            # A session this socket has not heard of yet starts at seq 1 (work_accepted).
            sent = self._sent[event.session_id] = SentRange(0, 0)
        if event.seq <= sent.high:
            return True
        while event.seq > sent.high + 1:
            try:
                missing = await self._fetch(event.session_id, sent.high, event.seq, self._page_size)
            except Exception as exc:
                # Sending this one would mark the ones before it as sent. Hold it: the next
                # event, a resync or the client's own resume fills the gap from the log.
                logger.warning("could not read the event log to fill a gap: %s", type(exc).__name__)
                return False
            for earlier in missing:
                await self._send_event(earlier)
                sent.high = earlier.seq
            if len(missing) < self._page_size:
                break  # the log has no more before this event (rolled back seqs)
        await self._send_event(event, request_id)
        sent.high = event.seq
        return True

    async def _replay(self, session_id: uuid.UUID, after_seq: int, request_id: str | None) -> None:
        """Send the events after ``after_seq`` that this socket has not sent, in order and a
        page at a time, then ``resumed`` with the session's real last seq (never the
        client's word for it: a ``last_seq`` beyond the log must not make the socket drop
        events as sent). Events that happen meanwhile wait in the queue behind the replay."""
        sent = self._sent.get(session_id)
        # A fresh socket reads from the client's own last event: finding it proves the log
        # reaches that far, without paging through everything before it.
        start = min(after_seq, sent.high) if sent is not None else max(0, after_seq - 1)
        cursor = start
        while True:
            try:
                page = await self._fetch(session_id, cursor, None, self._page_size)
            except Exception as exc:
                # ``resumed`` would claim a replay that did not happen: answer an error,
                # the client resumes again (from what the pages before this one sent).
                logger.warning(
                    "could not read the event log to resume: %s",
                    type(exc).__name__,
                    exc_info=not is_database_unavailable(exc),
                )
                if cursor > start:
                    self._mark_replayed(session_id, after_seq, cursor)
                error = WorksessionError()
                failed = encode(ErrorFrame(type="error", code=error.code, message=error.message))
                await self._write(with_request_id(failed, request_id))
                return
            for event in page:
                already_sent = sent is not None and sent.low < event.seq <= sent.high
                if event.seq > after_seq and not already_sent:
                    await self._send_event(event)
                cursor = event.seq
            if len(page) < self._page_size:
                if sent is None and cursor == start > 0:
                    # Not even the client's last event is logged: its last_seq is beyond
                    # the log. Read from the start, to answer with the log's real end.
                    start = cursor = 0
                    continue
                break
        last = self._mark_replayed(session_id, after_seq, cursor)
        resumed = encode(Resumed(type="resumed", session_id=str(session_id), last_seq=last))
        await self._write(with_request_id(resumed, request_id))

    def _mark_replayed(self, session_id: uuid.UUID, after_seq: int, read_to: int) -> int:
        """The replay read the log up to ``read_to``: the client now has every event up to
        there (it had those up to ``after_seq``). Returns the highest seq it has."""
        sent = self._sent.get(session_id)
        last = max(read_to, sent.high) if sent is not None else read_to
        low = min(after_seq, last)
        if sent is None:
            sent = self._sent[session_id] = SentRange(low, last)
        else:
            sent.low, sent.high = min(sent.low, low), max(sent.high, last)
        return sent.high

    async def _resync(self) -> bool:
        """Deliver, through the usual seq tracking, whatever was logged after the last event
        this socket sent, for every session it knows and the user's live session (which
        may have been created while the broker was away). True if that ended the session
        and the socket was closed."""
        session_ids = set(self._sent)
        if self._live_session_of is not None:
            try:
                live = await self._live_session_of()
            except Exception as exc:
                logger.warning(
                    "could not look up the live session to resync: %s", type(exc).__name__
                )
                live = None
            if live is not None:
                session_ids.add(live)
        for session_id in session_ids:
            while True:
                sent = self._sent.get(session_id)
                after = sent.high if sent is not None else 0
                page = await self._fetch_or_nothing(session_id, after)
                for event in page:
                    delivered = await self._deliver(event)
                    if delivered and event.kind in TERMINAL_KINDS:
                        await self._close(CLOSE_SESSION_ENDED, "session ended")
                        return True
                if len(page) < self._page_size:
                    break
        return False

    async def _fetch_or_nothing(self, session_id: uuid.UUID, after: int) -> list[LoggedEvent]:
        try:
            return await self._fetch(session_id, after, None, self._page_size)
        except Exception as exc:
            # Nothing is marked as sent: the next resync or the client's resume catches up.
            logger.warning("could not read the event log to resync: %s", type(exc).__name__)
            return []


async def _no_group(_group: str, _member: str, _limit: int) -> int:
    return 1


async def _left_no_group(_group: str, _member: str) -> int:
    return 0


@dataclass(slots=True)
class Hub:
    """This worker's sockets by channel, fed by the broker's single subscription.

    A user's sockets (one channel: one user in one role) form a broker group across all
    workers, capped at ``max_sockets``: a new one pushes the oldest out, which its worker
    closes with 4409 (:meth:`evict`). The same group tells each worker over how many
    workers the user is spread, which divides the user's frame budget (:meth:`spread`).
    """

    subscribe: Callable[[str], Awaitable[None]]
    unsubscribe: Callable[[str], Awaitable[None]]
    session_ended: Callable[[uuid.UUID], None] = lambda _session_id: None
    """Told of every session whose end reaches this worker (its typing timers stop)."""
    join: Callable[[str, str, int], Awaitable[int]] = _no_group
    leave: Callable[[str, str], Awaitable[int]] = _left_no_group
    max_sockets: int = 5
    user_rate: float = 40.0
    user_burst: int = 80
    _by_channel: dict[str, set[Connection]] = field(default_factory=dict)
    _by_id: dict[str, Connection] = field(default_factory=dict)
    _user_buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _rejoining: asyncio.Task[None] | None = None
    _rejoin_again: bool = False

    async def register(self, connection: Connection) -> None:
        channel = connection.channel
        async with self._lock:
            members = self._by_channel.setdefault(channel, set())
            members.add(connection)
            self._by_id[connection.id] = connection
            bucket = self._user_buckets.get(channel)
            if bucket is None:
                bucket = TokenBucket(rate=self.user_rate, burst=self.user_burst)
                self._user_buckets[channel] = bucket
            connection.user_bucket = bucket
            if len(members) == 1:
                await self.subscribe(channel)
        try:
            workers = await self.join(channel, connection.id, self.max_sockets)
        except Exception as exc:
            # Shared state that may be lost: without it the socket is served, uncapped.
            logger.warning("could not count the user's sockets: %s", type(exc).__name__)
        else:
            self.spread(channel, workers)

    async def unregister(self, connection: Connection) -> None:
        channel = connection.channel
        async with self._lock:
            members = self._by_channel.get(channel)
            if members is None or connection not in members:
                return
            members.discard(connection)
            self._by_id.pop(connection.id, None)
            if not members:
                del self._by_channel[channel]
                del self._user_buckets[channel]
                await self.unsubscribe(channel)
        try:
            workers = await self.leave(channel, connection.id)
        except Exception as exc:
            # The member stays counted until its worker's liveness key runs out.
            logger.warning("could not uncount a closed socket: %s", type(exc).__name__)
        else:
            self.spread(channel, workers)

    def evict(self, connection_id: str) -> None:
        """The broker's callback: a newer socket of the user pushed this one out."""
        connection = self._by_id.get(connection_id)
        if connection is not None:
            connection.close_soon(CLOSE_REPLACED, "replaced by a newer connection")

    def spread(self, channel: str, workers: int) -> None:
        """The broker's callback: the user's sockets are now on ``workers`` workers; this
        worker's share of the user's frame budget follows."""
        bucket = self._user_buckets.get(channel)
        if bucket is not None:
            share = max(1, workers)
            bucket.resize(rate=self.user_rate / share, burst=max(1.0, self.user_burst / share))

    def deliver(self, channel: str, payload: bytes) -> None:
        """The broker's callback: decode once, hand to every local socket of the channel."""
        try:
            envelope = decode(payload)
        except (ValueError, KeyError, TypeError):
            logger.error("dropping a malformed broker message on %s", channel.split(":")[1])
            return
        event = envelope.event
        if event is not None and event.kind in TERMINAL_KINDS:
            self.session_ended(event.session_id)
        members = self._by_channel.get(channel)
        if not members:
            return
        item: Item = SendFrame(envelope.text) if event is None else SendEvent(event)
        skip = envelope.skip
        for connection in list(members):
            if connection.id != skip:
                connection.offer(item)

    def resync(self) -> None:
        """After a broker outage: every local socket catches up from the event log, and
        is counted in its user's group again (the groups may have been lost with Redis,
        or dropped while this worker's liveness key could not be renewed): presence and
        the cap read them."""
        for connection in self.connections():
            connection.offer(Resync())
        if self._rejoining is None or self._rejoining.done():
            self._rejoining = asyncio.create_task(self._rejoin_until_settled(), name="hub-rejoin")
        else:
            # Redis may have gone and come back under the running rejoin, losing the
            # sockets it had already counted: count them all once more when it is done.
            self._rejoin_again = True

    async def _rejoin_until_settled(self) -> None:
        while True:
            self._rejoin_again = False
            await self._rejoin()
            if not self._rejoin_again:
                return

    async def _rejoin(self) -> None:
        for connection in self.connections():
            if connection.closing:
                continue
            try:
                workers = await self.join(connection.channel, connection.id, self.max_sockets)
            except Exception as exc:
                # The broker went again: its next comeback calls resync again.
                logger.warning("could not count the sockets again: %s", type(exc).__name__)
                return
            if connection.id not in self._by_id:
                # It unregistered while joining, maybe before its leave: not counted forever.
                with contextlib.suppress(Exception):
                    await self.leave(connection.channel, connection.id)
                continue
            self.spread(connection.channel, workers)

    def connections(self) -> list[Connection]:
        return [c for members in self._by_channel.values() for c in members]
