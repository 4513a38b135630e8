"""The WebSocket endpoints: authenticate, then read, check and dispatch one frame at a time.

Per frame, in this order and before any database work: the size limit (enforced by the
server, 1009), the rate limit, JSON decoding, the type, the role, and validation. Then one
short transaction runs the service, the direct answer is queued for this socket, and what
the transaction produced is published after the commit. A bad frame costs the client an
``error`` frame, never the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal, assert_never

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from worksession.chat import service as chat
from worksession.chat.batch import Action as ChatAction
from worksession.chat.batch import ChatFrame
from worksession.errors import Forbidden, WorksessionError
from worksession.kit.clock import isoformat_z, utcnow
from worksession.kit.db import DbSession, is_database_unavailable
from worksession.kit.jwt import Claims, InvalidToken
from worksession.ops import metrics
from worksession.ops.logs import request_id_var, session_id_var
from worksession.orders import service as orders
from worksession.outbox import Outbox, Role, dumps, publish
from worksession.realtime.connections import (
    CLOSE_POLICY,
    CLOSE_UNAUTHENTICATED,
    Connection,
    Replay,
    SendEvent,
)
from worksession.realtime.protocol import (
    AuthRefresh,
    BadFrame,
    CancelConnection,
    ChatMessageIn,
    CompleteSession,
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
    parse_frame,
)
from worksession.realtime.ratelimit import TokenBucket, retry_after_ms
from worksession.sessions import events as event_log
from worksession.sessions import service as sessions
from worksession.sessions.events import Answer
from worksession.sessions.schemas import LocationRules
from worksession.state import AppState, get_state

logger = logging.getLogger(__name__)
router = APIRouter()

CLOSE_WRONG_ROLE = 4403
SUSTAINED_ABUSE_S = 10.0

ServiceCall = Callable[[DbSession, Outbox], Awaitable[Answer | None]]


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
        self.user_id = claims.sub
        settings = state.settings
        self.bucket = TokenBucket(rate=settings.rate_limit_per_s, burst=settings.rate_limit_burst)
        self.location_rules = LocationRules.from_settings(settings)
        self.connection = Connection(
            websocket,
            user_id=claims.sub,
            role=role,
            fetch_events=self._fetch_events,
            live_session_of=self._live_session_id,
        )
        self._expiry: asyncio.Task[None] | None = None

    async def run(self) -> None:
        hub = self.state.hub
        # Subscribe before reading the snapshot: an event committed in between is queued
        # and then either dropped as already counted in the snapshot or delivered.
        await hub.register(self.connection)
        metrics.socket_opened(self.role)
        try:
            connected, baseline = await self._connected_frame()
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

    async def _connected_frame(self) -> tuple[str, dict[uuid.UUID, int]]:
        async with self.state.db.transaction() as s:
            snapshot = await sessions.snapshot_for(s, user_id=self.user_id, role=self.role)
            pending = (
                await orders.pending_work_for(s, self.user_id) if self.role == "provider" else []
            )
        frame: dict[str, Any] = {
            "type": "connected",
            "user_type": self.role,
            "server_time": isoformat_z(utcnow()),
            "session": snapshot.to_frame_dict() if snapshot else None,
            "pending_work": pending,
        }
        baseline = {uuid.UUID(snapshot.session_id): snapshot.last_seq} if snapshot else {}
        return dumps(frame), baseline

    def _schedule_expiry(self, exp: datetime) -> None:
        if self._expiry is not None:
            self._expiry.cancel()

        async def close_at_expiry() -> None:
            await asyncio.sleep(max(0.0, (exp - utcnow()).total_seconds()))
            self.connection.close_soon(CLOSE_UNAUTHENTICATED, "token expired")

        self._expiry = asyncio.create_task(close_at_expiry())

    async def _live_session_id(self) -> uuid.UUID | None:
        async with self.state.db.transaction() as s:
            snapshot = await sessions.snapshot_for(s, user_id=self.user_id, role=self.role)
        return uuid.UUID(snapshot.session_id) if snapshot else None

    async def _fetch_events(
        self, session_id: uuid.UUID, after: int, before: int | None
    ) -> list[event_log.LoggedEvent]:
        async with self.state.db.transaction() as s:
            return await event_log.read_after(
                s, session_id=session_id, after_seq=after, before_seq=before
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

    async def _on_frame(self, raw: str | bytes) -> None:
        wait = self.bucket.take()
        if wait:
            if self.bucket.dropping_for() >= SUSTAINED_ABUSE_S:
                self.connection.close_soon(CLOSE_POLICY, "rate limit exceeded")
                return
            metrics.error_sent("rate_limited")
            limited: dict[str, Any] = {
                "type": "error",
                "code": "rate_limited",
                "message": "Too many frames; this one was dropped",
                "retry_after_ms": retry_after_ms(wait),
            }
            if peeked := _peek_request_id(raw):
                limited["request_id"] = peeked
            self.connection.send(limited)
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
        frame: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message}
        if request_id is not None:
            frame["request_id"] = request_id
        if error.details:
            frame["details"] = error.details
        metrics.error_sent(error.code)
        self.connection.send(frame)

    async def _dispatch(self, message: Any) -> None:
        uid, role, settings = self.user_id, self.role, self.state.settings
        retention = settings.message_retention_hours
        match message:
            case Ping():
                self._reply({"type": "pong", "server_time": isoformat_z(utcnow())}, message)
            case WorkResponse(work_id=work_id, accepted=True):
                await self._run(
                    lambda s, o: orders.accept_work(s, o, work_id=work_id, provider_id=uid),
                    message,
                )
            case WorkResponse(work_id=work_id, accepted=False):
                await self._run(
                    lambda s, o: orders.decline_work(s, o, work_id=work_id, provider_id=uid),
                    message,
                )
            case MediumSelection(session_id=sid, mediums=mediums):
                await self._run(
                    lambda s, o: sessions.select_mediums(
                        s, o, session_id=sid, seeker_id=uid, mediums=mediums
                    ),
                    message,
                )
            case MediumShare(session_id=sid, mediums=mediums):
                await self._run(
                    lambda s, o: sessions.share_mediums(
                        s, o, session_id=sid, provider_id=uid, mediums=mediums
                    ),
                    message,
                )
            case LocationUpdate():
                await self._run(
                    lambda s, o: self._update_location(s, o, message),
                    message,
                )
            case StartChat(session_id=sid):
                await self._run(
                    lambda s, o: chat.start_chat(s, o, session_id=sid, user_id=uid, role=role),
                    message,
                )
            case ChatMessageIn(session_id=sid, message=text, client_msg_id=client_msg_id):
                await self._run_chat(
                    lambda s, o: chat.send_message(
                        s,
                        o,
                        session_id=sid,
                        user_id=uid,
                        role=role,
                        text=text,
                        client_msg_id=client_msg_id,
                    ),
                    message,
                    "message",
                    session_id=sid,
                    text=text,
                    client_msg_id=client_msg_id,
                )
            case MessageDelivered(message_id=mid) | MessageRead(message_id=mid):
                status: Literal["delivered", "read"] = (
                    "delivered" if isinstance(message, MessageDelivered) else "read"
                )
                await self._run_chat(
                    lambda s, o: chat.acknowledge(
                        s, o, message_id=mid, user_id=uid, role=role, status=status
                    ),
                    message,
                    status,
                    message_id=mid,
                )
            case TypingIndicatorIn(session_id=sid, is_typing=is_typing):
                await self._run(
                    lambda s, o: chat.set_typing(
                        s, o, session_id=sid, user_id=uid, role=role, is_typing=is_typing
                    ),
                    message,
                )
            case CancelConnection(session_id=sid):
                await self._run(
                    lambda s, o: sessions.cancel_session(
                        s, o, session_id=sid, user_id=uid, role=role, retention_hours=retention
                    ),
                    message,
                )
            case CompleteSession(session_id=sid):
                await self._run(
                    lambda s, o: sessions.complete_session(
                        s, o, session_id=sid, provider_id=uid, retention_hours=retention
                    ),
                    message,
                )
            case Resume(session_id=sid, last_seq=last_seq):
                async with self.state.db.transaction() as s:
                    await sessions.check_replay_allowed(
                        s, session_id=sid, user_id=uid, role=role, retention_hours=retention
                    )
                self.connection.offer(Replay(sid, last_seq, message.request_id))
            case AuthRefresh(token=token):
                self._refresh(token, message)
            case _:
                assert_never(message)

    async def _update_location(
        self, s: DbSession, outbox: Outbox, message: LocationUpdate
    ) -> Answer:
        return await sessions.update_location(
            s,
            outbox,
            session_id=message.session_id,
            user_id=self.user_id,
            role=self.role,
            lat=message.lat,
            lng=message.lng,
            accuracy_m=message.accuracy,
            recorded_at=message.recorded_at,
            rules=self.location_rules,
        )

    def _refresh(self, token: str, message: AuthRefresh) -> None:
        try:
            claims = self.state.verifier.verify(token)
        except InvalidToken as exc:
            raise Forbidden(f"The new token was refused ({exc.reason})") from None
        if (claims.sub, claims.user_type) != (self.claims.sub, self.claims.user_type):
            raise Forbidden("A refreshed token must be for the same user and role")
        self.claims = claims
        self._schedule_expiry(claims.exp)
        self._reply({"type": "auth_refreshed", "exp": isoformat_z(claims.exp)}, message)

    def _reply(self, frame: dict[str, Any], message: Any) -> None:
        if message.request_id is not None:
            frame["request_id"] = message.request_id
        self.connection.send(frame)

    async def _run(self, call: ServiceCall, message: Any) -> None:
        """One transaction; then the direct answer; then, after commit, the publication.

        The answer is queued before publishing so that this socket's copy from the broker
        arrives second and is dropped as already sent: the client sees each event once,
        and the one that answers its frame carries its ``request_id`` however it arrives.
        """
        outbox = Outbox(origin=self.connection.id)
        answering = AnswerTo(self.connection, message)
        answer: Answer | None = None
        try:
            async with self.state.db.transaction() as s:
                answer = await call(s, outbox)
                if answer is not None:
                    answering.before_commit(answer)
        except BaseException:
            if answer is not None:
                answering.rolled_back(answer)
            raise
        if answer is not None:
            answering.committed(answer)
        await publish(self.state.broker, outbox)

    async def _run_chat(
        self, call: ServiceCall, message: Any, action: ChatAction, **frame: Any
    ) -> None:
        """A chat frame: in the next group commit where there is one (PostgreSQL), else
        alone (``call`` is the same work for one frame)."""
        batcher = self.state.chat_batcher
        if batcher is None:
            await self._run(call, message)
            return
        requester = AnswerTo(self.connection, message)
        await batcher.submit(
            ChatFrame(
                action, self.user_id, self.role, requester, origin=self.connection.id, **frame
            )
        )


class AnswerTo:
    """Answers one frame on its socket, around the transaction that handles it."""

    __slots__ = ("_connection", "_expected", "_message")

    def __init__(self, connection: Connection, message: Any) -> None:
        self._connection = connection
        self._message = message
        self._expected: tuple[uuid.UUID, int] | None = None

    def before_commit(self, answer: Answer) -> None:
        # Before COMMIT: the moment it commits, another frame's later event may make this
        # socket fill the gap with this one, and that copy must carry the request_id too.
        request_id = self._message.request_id
        if answer.events and answer.answers and request_id:
            answering = answer.events[-1]
            self._expected = (answering.session_id, answering.seq)
            self._connection.expect_answer(*self._expected, request_id)

    def rolled_back(self, answer: Answer) -> None:
        if self._expected is not None:
            self._connection.forget_answer(*self._expected)  # the seq may be reused
            self._expected = None

    def committed(self, answer: Answer) -> None:
        for event in answer.events:
            self._connection.offer(SendEvent(event))
        if answer.frame is not None:
            frame = dict(answer.frame)
            if self._message.request_id is not None:
                frame["request_id"] = self._message.request_id
            self._connection.send(frame)


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
    return found.group(1) if found else None


async def close_all(state: AppState, code: int, reason: str, timeout_s: float = 5.0) -> None:
    for connection in state.hub.connections():
        connection.close_soon(code, reason)
    # A peer that never answers the close must not hold the shutdown.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            asyncio.gather(*(c.closed.wait() for c in state.hub.connections())), timeout_s
        )
