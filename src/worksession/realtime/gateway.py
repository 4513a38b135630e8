"""The WebSocket endpoints: authenticate, then read, check and turn each frame into a command.

Per frame, in this order and before any database work: the size limit (enforced by the
server, 1009), the rate limit, JSON decoding, the type, the role, and validation. Then a
state-changing frame becomes a command for the write pipeline, which answers this socket
after its batch has committed; typing is relayed without the pipeline, and the replay of
``resume`` is read by the socket's writer. A bad frame costs the client an ``error`` frame,
never the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import re
import time
import uuid
from datetime import datetime
from typing import Any, assert_never

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from worksession.errors import Forbidden, RateLimited, WorksessionError
from worksession.eventlog import repository as event_log
from worksession.eventlog.events import LoggedEvent
from worksession.eventlog.outbox import Role, publish
from worksession.geo import Fix
from worksession.kit.clock import utcnow
from worksession.kit.db import is_database_unavailable
from worksession.kit.jwt import Claims, InvalidToken
from worksession.ops import metrics
from worksession.ops.logs import request_id_var, session_id_var
from worksession.orders import lookup as orders
from worksession.pipeline import commands as c
from worksession.pipeline.decision import AnsweredByEvent, AnswerFrame
from worksession.pipeline.rows import SessionRow
from worksession.pipeline.runner import Outcome
from worksession.protocol.inbound import (
    AuthRefresh,
    BadFrame,
    CancelConnection,
    CancelWork,
    ChatMessageIn,
    CompleteSession,
    InboundMessage,
    LocationUpdate,
    MediumSelection,
    MediumShare,
    MessageDelivered,
    MessageRead,
    Ping,
    Resume,
    StartChat,
    TypingIndicatorIn,
    WorkResponse,
    is_client_label,
    parse_frame,
)
from worksession.protocol.outbound import AuthRefreshed, Connected, ErrorFrame, Pong
from worksession.realtime.connections import (
    CLOSE_POLICY,
    CLOSE_UNAUTHENTICATED,
    Connection,
    Replay,
    SendEvent,
)
from worksession.realtime.ratelimit import TokenBucket, retry_after_ms
from worksession.sessions import lookup as sessions
from worksession.state import AppState, get_state

logger = logging.getLogger(__name__)
router = APIRouter()

CLOSE_WRONG_ROLE = 4403
SUSTAINED_ABUSE_S = 10.0
CLOSE_TRY_AGAIN = 1013


SOCKET_PATHS: dict[str, Role] = {
    "/ws/work/seeker/": "seeker",
    "/ws/work/seeker": "seeker",
    "/ws/work/provider/": "provider",
    "/ws/work/provider": "provider",
}
"""The gateway's paths; ``main.SocketsFirst`` routes them past the framework, the routes
below serve them in an application used without it (the tests' in-process app)."""


@router.websocket("/ws/work/seeker/")
@router.websocket("/ws/work/seeker")
async def seeker_socket(websocket: WebSocket) -> None:
    await serve_socket(websocket, "seeker")


@router.websocket("/ws/work/provider/")
@router.websocket("/ws/work/provider")
async def provider_socket(websocket: WebSocket) -> None:
    await serve_socket(websocket, "provider")


def bearer_token(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return websocket.query_params.get("token") or None


async def serve_socket(websocket: WebSocket, role: Role) -> None:
    state = get_state(websocket)
    token = bearer_token(websocket)
    await websocket.accept()
    try:
        claims = state.verifier.verify(token or "")
    except InvalidToken as exc:
        logger.info("refused a %s socket: %s", role, exc.reason)
        await websocket.close(CLOSE_UNAUTHENTICATED, "invalid or expired token")
        return
    if claims.user_type != role:
        await websocket.close(CLOSE_WRONG_ROLE, f"this endpoint is for {role}s")
        return
    await SocketSession(websocket, state, claims, role).run()


class SocketSession:
    """One authenticated socket: its connection, its limits and its frame loop."""

    def __init__(self, websocket: WebSocket, state: AppState, claims: Claims, role: Role) -> None:
        self.websocket = websocket
        self.state = state
        self.claims = claims
        self.role = role
        self.actor = c.Actor(claims.sub, role)
        settings = state.settings
        self.bucket = TokenBucket(rate=settings.rate_limit_per_s, burst=settings.rate_limit_burst)
        self.connection = Connection(
            websocket,
            user_id=claims.sub,
            role=role,
            fetch_events=self._fetch_events,
            live_session_of=self._live_session_id,
            page_size=settings.replay_page_size,
        )
        self._expiry: asyncio.TimerHandle | None = None
        self._typing_in: dict[uuid.UUID, SessionRow] = {}
        """The sessions this socket may type in, checked once each (the socket closes when
        such a session ends)."""
        self._touched: dict[uuid.UUID, float] = {}
        """When (monotonic) this socket last wrote a sign of life for each session."""

    async def run(self) -> None:
        hub = self.state.hub
        # Subscribe before reading the snapshot: an event committed in between is queued
        # and then either dropped as already counted in the snapshot or delivered.
        await hub.register(self.connection)
        metrics.socket_opened(self.role)
        try:
            try:
                connected, baseline = await self._connected_frame()
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                # The client is fine and so is this process: it should come back later.
                logger.warning(
                    "closed a %s socket with 1013, database unavailable: %s",
                    self.role,
                    type(exc).__name__,
                )
                self.connection.close_soon(CLOSE_TRY_AGAIN, "try again later")
                return
            if self.connection.closing:
                # Pushed out (4409) by a newer socket of this user while the snapshot was
                # read: the close frame is on its way, and `connected` must not follow it.
                return
            await self.websocket.send_text(connected)
            metrics.frame_out(connected)
            self.connection.start(baseline=baseline)
            self._schedule_expiry(self.claims.exp)
            await self._read_loop()
        except WebSocketDisconnect:
            pass
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
            metrics.socket_closed(self.role)
            await hub.unregister(self.connection)
            await self.connection.wait_closed()
            # After the writer is gone: its last ``work_accepted`` cannot watch again.
            self.state.presence.forget(self.connection)

    async def _connected_frame(self) -> tuple[str, dict[uuid.UUID, int]]:
        async with self.state.db.transaction() as s:
            view = await sessions.live_view_for(s, user_id=self.actor.user_id, role=self.role)
            if self.role == "provider":
                pending, open_orders = await orders.pending_work_for(s, self.actor.user_id), []
            else:
                pending, open_orders = [], await orders.open_orders_for(s, self.actor.user_id)
        snapshot = None
        presence = self.state.presence
        if view is not None:
            # Counted after the database read, outside its transaction; the watch starts
            # from what the snapshot says, so that a change from then on is a frame, queued
            # behind `connected` (the writer starts once it is sent).
            online = await presence.is_online(view.peer_role, view.peer_id)
            snapshot = view.with_presence(online)
            session_id = uuid.UUID(snapshot.session_id)
            presence.watch(self.connection, session_id, view.peer_role, view.peer_id, online)
        # Sessions this socket sees start (work_accepted) or end are watched from then on.
        self.connection.session_seen = functools.partial(presence.session_seen, self.connection)
        frame = Connected(
            type="connected",
            user_type=self.role,
            server_time=utcnow(),
            session=snapshot,
            pending_work=pending,
            open_orders=open_orders,
        )
        baseline = {uuid.UUID(snapshot.session_id): snapshot.last_seq} if snapshot else {}
        return frame.model_dump_json(), baseline

    def _schedule_expiry(self, exp: datetime) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, (exp - utcnow()).total_seconds()),
            self.connection.close_soon,
            CLOSE_UNAUTHENTICATED,
            "token expired",
        )

    async def _live_session_id(self) -> uuid.UUID | None:
        async with self.state.db.transaction() as s:
            snapshot = await sessions.snapshot_for(s, user_id=self.actor.user_id, role=self.role)
        return uuid.UUID(snapshot.session_id) if snapshot else None

    async def _fetch_events(
        self, session_id: uuid.UUID, after: int, before: int | None, limit: int
    ) -> list[LoggedEvent]:
        async with self.state.db.transaction() as s:
            return await event_log.read_after(
                s, session_id=session_id, after_seq=after, before_seq=before, limit=limit
            )

    # --- the frame loop ------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while not self.connection.closed.is_set():
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw: str | bytes | None = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            await self._on_frame(raw)
            self.connection.release()

    async def _on_frame(self, raw: str | bytes) -> None:
        bucket = self.bucket
        wait = bucket.take()
        if not wait and self.connection.user_bucket is not None:
            # The user's budget over all their sockets: a second socket is not a second
            # allowance. Checked only once the socket's own bucket let the frame through.
            bucket = self.connection.user_bucket
            wait = bucket.take()
        if wait:
            # Only a socket that itself keeps over its own limit is closed: when the user's
            # shared budget refuses, the frame is dropped, but a quiet device must not be
            # disconnected because another device of the same user floods.
            if self.bucket.dropping_for() >= SUSTAINED_ABUSE_S:
                self.connection.close_soon(CLOSE_POLICY, "rate limit exceeded")
                return
            refused = RateLimited()
            metrics.error_sent(refused.code)
            limited = ErrorFrame(
                type="error",
                code=refused.code,
                message=refused.message,
                retry_after_ms=retry_after_ms(wait),
            )
            self.connection.send(limited, _peek_request_id(raw))
            return
        request_id: str | None = None
        request_token = session_token = None
        try:
            message = parse_frame(raw, role=self.role)
            request_id = message.request_id
            metrics.frame_in(message.type)
            # Log lines while the frame is handled, an unexpected error's included, carry
            # its request and session ids.
            request_token = request_id_var.set(request_id)
            session_token = session_id_var.set(_session_of(message))
            started = time.perf_counter()
            await self._dispatch(message)
            logger.debug(
                "handled %s in %.1f ms", message.type, (time.perf_counter() - started) * 1000
            )
        except BadFrame as bad:
            self._send_error(bad.error, bad.request_id)
        except WorksessionError as exc:
            self._send_error(exc, request_id)
        except Exception as exc:
            if is_database_unavailable(exc):
                logger.warning(
                    "database unavailable while handling a frame: %s", type(exc).__name__
                )
            else:
                logger.exception("unexpected error while handling a frame")
            self._send_error(WorksessionError(), request_id)
        finally:
            if session_token is not None:
                session_id_var.reset(session_token)
            if request_token is not None:
                request_id_var.reset(request_token)

    def _send_error(self, error: WorksessionError, request_id: str | None) -> None:
        fields: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message}
        if error.details:
            fields["details"] = error.details
        if isinstance(error, RateLimited) and error.retry_after_ms is not None:
            fields["retry_after_ms"] = error.retry_after_ms
        frame = ErrorFrame(**fields)
        metrics.error_sent(error.code)
        self.connection.send(frame, request_id)

    async def _dispatch(self, message: InboundMessage) -> None:
        actor, uid = self.actor, self.actor.user_id
        match message:
            case Ping():
                self.connection.send(Pong(type="pong", server_time=utcnow()), message.request_id)
            case WorkResponse(work_id=work_id, accepted=accepted):
                response = c.AcceptWork(work_id, uid) if accepted else c.DeclineWork(work_id, uid)
                await self._submit(response, message.request_id)
            case CancelWork(work_id=work_id):
                await self._submit(c.WithdrawWork(work_id, uid), message.request_id)
            case MediumSelection(session_id=sid, mediums=mediums):
                await self._submit(c.SelectMediums(sid, uid, mediums), message.request_id)
            case MediumShare(session_id=sid, mediums=mediums):
                await self._submit(c.ShareMediums(sid, uid, mediums), message.request_id)
            case LocationUpdate(session_id=sid):
                fix = Fix(message.lat, message.lng, message.accuracy, message.recorded_at)
                await self._submit(c.ReportLocation(sid, actor, fix), message.request_id)
            case StartChat(session_id=sid):
                await self._submit(c.StartChat(sid, actor), message.request_id)
            case ChatMessageIn(session_id=sid, message=text, client_msg_id=client_msg_id):
                command = c.SendMessage(sid, actor, text, client_msg_id)
                await self._submit(command, message.request_id)
            case MessageDelivered(message_id=mid):
                await self._submit(c.AcknowledgeMessage(mid, actor, "delivered"), None)
            case MessageRead(message_id=mid):
                await self._submit(c.AcknowledgeMessage(mid, actor, "read"), None)
            case TypingIndicatorIn(session_id=sid, is_typing=is_typing):
                await self._typing(sid, is_typing)
            case CancelConnection(session_id=sid):
                await self._submit(c.CancelSession(sid, actor), message.request_id)
            case CompleteSession(session_id=sid):
                await self._submit(c.CompleteSession(sid, uid), message.request_id)
            case Resume(session_id=sid, last_seq=last_seq):
                async with self.state.db.transaction() as s:
                    await sessions.replay_allowed(
                        s,
                        session_id=sid,
                        user_id=uid,
                        role=self.role,
                        retention=self.state.pipeline.policy.retention,
                    )
                self.connection.offer(Replay(sid, last_seq, message.request_id))
                await self._touch(sid)
            case AuthRefresh(token=token):
                self._refresh(token, message.request_id)
            case _:
                assert_never(message)

    async def _submit(self, command: c.Command, request_id: str | None) -> None:
        """The command through the pipeline; this socket is answered once it committed."""
        await self.state.pipeline.submit(
            command, requester=AnswerTo(self.connection, request_id), origin=self.connection.id
        )

    async def _typing(self, session_id: uuid.UUID, is_typing: bool) -> None:
        session = self._typing_in.get(session_id)
        if session is None:
            async with self.state.db.transaction() as s:
                session = await sessions.live_session_for(s, session_id, self.actor)
            self._typing_in[session_id] = session
        await publish(self.state.broker, self.state.typing.typing(session, self.role, is_typing))
        await self._touch(session_id)

    async def _touch(self, session_id: uuid.UUID) -> None:
        """Typing and ``resume`` keep a session from being abandoned (PROTOCOL 5, *1.1*)
        but write nothing of their own: a write now and then, not one per keystroke."""
        now = time.monotonic()
        if now - self._touched.get(session_id, -math.inf) < self.state.settings.touch_interval_s:
            return
        self._touched[session_id] = now
        try:
            await self.state.pipeline.submit(
                c.TouchSession(session_id, self.actor), origin=self.connection.id
            )
        except Exception as exc:
            # A sign of life that could not be written is not the client's error: its
            # typing was relayed and its resume runs. The next touch, a minute on, retries.
            logger.warning("could not mark a session touched: %s", type(exc).__name__)

    def _refresh(self, token: str, request_id: str | None) -> None:
        try:
            claims = self.state.verifier.verify(token)
        except InvalidToken as exc:
            raise Forbidden(f"The new token was refused ({exc.reason})") from None
        if (claims.sub, claims.user_type) != (self.claims.sub, self.claims.user_type):
            raise Forbidden("A refreshed token must be for the same user and role")
        self.claims = claims
        self._schedule_expiry(claims.exp)
        self.connection.send(AuthRefreshed(type="auth_refreshed", exp=claims.exp), request_id)


class AnswerTo:
    """Answers one frame on its socket, around the transaction that handles it."""

    __slots__ = ("_connection", "_expected", "_request_id")

    def __init__(self, connection: Connection, request_id: str | None) -> None:
        self._connection = connection
        self._request_id = request_id
        self._expected: tuple[uuid.UUID, int] | None = None

    def before_commit(self, outcome: Outcome) -> None:
        # Before COMMIT: the moment it commits, another frame's later event may make this
        # socket fill the gap with this one, and that copy must carry the request_id too.
        if self._request_id and outcome.events and isinstance(outcome.reply, AnsweredByEvent):
            answering = outcome.events[-1]
            self._expected = (answering.session_id, answering.seq)
            self._connection.expect_answer(*self._expected, self._request_id)

    def rolled_back(self, outcome: Outcome) -> None:
        if self._expected is not None:
            self._connection.forget_answer(*self._expected)  # the seq may be reused
            self._expected = None

    def committed(self, outcome: Outcome) -> None:
        for event in outcome.events:
            self._connection.offer(SendEvent(event))
        if isinstance(outcome.reply, AnswerFrame):
            self._connection.send(outcome.reply.frame, self._request_id)


def _session_of(message: Any) -> str | None:
    session_id = getattr(message, "session_id", None)
    return None if session_id is None else str(session_id)


_REQUEST_ID = re.compile(r'"request_id"\s*:\s*"([^"\\]{1,64})"')


def _peek_request_id(raw: str | bytes) -> str | None:
    """The request_id of a frame that will not be parsed (it was rate limited): a regular
    expression over the text costs far less than decoding JSON the client keeps sending."""
    if not isinstance(raw, str):
        return None
    found = _REQUEST_ID.search(raw)
    # The same rule as a parsed frame's: a raw control character is not echoed either.
    return found.group(1) if found and is_client_label(found.group(1)) else None


async def close_all(state: AppState, code: int, reason: str, timeout_s: float = 5.0) -> None:
    for connection in state.hub.connections():
        connection.close_soon(code, reason)
    # A peer that never answers the close must not hold the shutdown.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            asyncio.gather(*(c.closed.wait() for c in state.hub.connections())), timeout_s
        )
