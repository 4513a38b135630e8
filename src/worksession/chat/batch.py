"""Group commit for chat messages and receipts on PostgreSQL.

Frame by frame, a chat message with its two receipts cost three transactions of about five
ORM statements each: some 13 ms of CPU on the reference machine, where the statements
themselves are cheap. Here the frames that queue up while one batch is in the database go
together as the next batch: one transaction, a handful of set-based statements whatever
the batch size, one COMMIT, then every frame is answered and all their events go out in
one pipelined publish.

The rules are those of :func:`~worksession.chat.service.send_message` and
:func:`~worksession.chat.service.acknowledge`, applied in arrival order to the locked
rows, so each frame gets exactly the answer, error and events it would have got alone:

- A frame that breaks a rule (no such session, a receipt for one's own message, ...) gets
  its error and takes no part in the writes; the others go on.
- The sessions of the batch are locked in primary key order, so batches of two workers
  wait for each other rather than deadlock. Should a batch still fail in the database (a
  deadlock with some other transaction, a conflict nobody foresaw), it is rolled back and
  its frames run again one by one on the one-frame path, each in its own transaction:
  the database settles every race, as before.
- Nobody is answered before the COMMIT; an answer's ``request_id`` is registered just
  before it (as the one-frame path does) and withdrawn if the batch rolls back.
- Seq numbers follow arrival order within a session, and batches run one after the other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from worksession.chat import bulk_repository as bulk
from worksession.chat import service as chat
from worksession.errors import (
    Forbidden,
    InvalidState,
    MessageNotFound,
    SessionNotFound,
    WorksessionError,
)
from worksession.kit.broker import Broker
from worksession.kit.clock import utcnow
from worksession.kit.db import Database, is_database_unavailable
from worksession.kit.group_commit import GroupCommit
from worksession.ops import metrics
from worksession.outbox import Outbox, publish_all
from worksession.sessions.events import Answer, LoggedEvent
from worksession.sessions.render import chat_message_ack
from worksession.sessions.states import MessageStatus, SessionState, is_live

logger = logging.getLogger(__name__)

Action = Literal["message", "delivered", "read"]

# A receipt step is taken only from the status right behind it.
_PREVIOUS: dict[MessageStatus, MessageStatus] = {
    MessageStatus.DELIVERED: MessageStatus.SENT,
    MessageStatus.READ: MessageStatus.DELIVERED,
}


class Requester(Protocol):
    """The socket a frame came from, as far as answering it goes."""

    def before_commit(self, answer: Answer) -> None:
        """The answer is decided; the transaction is about to commit."""

    def rolled_back(self, answer: Answer) -> None:
        """The answer announced by ``before_commit`` will not happen."""

    def committed(self, answer: Answer) -> None:
        """Queue the direct answer; called after COMMIT and before the publication."""


@dataclass(slots=True, eq=False)
class ChatFrame:
    """One ``chat_message``, ``message_delivered`` or ``message_read`` waiting for its batch."""

    action: Action
    user_id: str
    role: str
    requester: Requester
    origin: str | None = None
    session_id: uuid.UUID | None = None
    text: str = ""
    client_msg_id: str | None = None
    message_id: uuid.UUID | None = None
    done: asyncio.Future[Answer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Planned:
    """What the batch decided for one frame before writing anything."""

    frame: ChatFrame
    outcome: Answer | WorksessionError
    outbox: Outbox


class BatchConflict(Exception):
    """A set-based write did not do what the locked rows promised; redo frame by frame."""


class ChatBatcher:
    """The per-process group commit of chat frames (PostgreSQL)."""

    def __init__(self, db: Database, broker: Broker, *, max_batch: int = 256) -> None:
        self._db = db
        self._broker = broker
        self._group: GroupCommit[ChatFrame] = GroupCommit(self._run, max_batch=max_batch)
        self.fallbacks = 0

    async def submit(self, frame: ChatFrame) -> Answer:
        """Queue ``frame``; returns its answer once committed, or raises its error."""
        self._group.submit(frame)
        return await asyncio.shield(frame.done)

    async def wait_idle(self) -> None:
        await self._group.wait_idle()

    @property
    def batches(self) -> int:
        return self._group.batches

    async def _run(self, frames: list[ChatFrame]) -> None:
        try:
            await self._run_batch(frames)
        except BaseException as exc:
            for frame in frames:
                if not frame.done.done():
                    frame.done.set_exception(exc)
            raise

    async def _run_batch(self, frames: list[ChatFrame]) -> None:
        now = utcnow()
        plans: list[_Planned] = []
        try:
            async with self._db.driver_transaction() as conn:
                plans = await _plan_and_write(conn, frames, now)
                for plan in plans:
                    if isinstance(plan.outcome, Answer):
                        plan.frame.requester.before_commit(plan.outcome)
        except Exception as exc:
            for plan in plans:
                if isinstance(plan.outcome, Answer):
                    plan.frame.requester.rolled_back(plan.outcome)
            if is_database_unavailable(exc):
                # One by one would only fail again, once per frame: answer them all now.
                for frame in frames:
                    frame.done.set_exception(exc)
                return
            self.fallbacks += 1
            logger.info(
                "a batch of %d chat frames failed (%s); running them one by one",
                len(frames),
                type(exc).__name__,
            )
            for frame in frames:
                await self._run_alone(frame)
            return
        for plan in plans:
            if isinstance(plan.outcome, Answer):
                plan.frame.requester.committed(plan.outcome)
                plan.frame.done.set_result(plan.outcome)
            else:
                plan.frame.done.set_exception(plan.outcome)
        await publish_all(self._broker, [plan.outbox for plan in plans])

    async def _run_alone(self, frame: ChatFrame) -> None:
        """The one-frame path: the service in a transaction of its own, then the answer."""
        outbox = Outbox(origin=frame.origin)
        answer: Answer | None = None
        try:
            async with self._db.transaction() as s:
                if frame.action == "message":
                    assert frame.session_id is not None
                    answer = await chat.send_message(
                        s,
                        outbox,
                        session_id=frame.session_id,
                        user_id=frame.user_id,
                        role=frame.role,
                        text=frame.text,
                        client_msg_id=frame.client_msg_id,
                    )
                else:
                    assert frame.message_id is not None
                    answer = await chat.acknowledge(
                        s,
                        outbox,
                        message_id=frame.message_id,
                        user_id=frame.user_id,
                        role=frame.role,
                        status=frame.action,
                    )
                frame.requester.before_commit(answer)
        except Exception as exc:
            if answer is not None:
                frame.requester.rolled_back(answer)
            frame.done.set_exception(exc)
            return
        frame.requester.committed(answer)
        frame.done.set_result(answer)
        await publish_all(self._broker, [outbox])


def _participant(role: str, seeker_id: str, provider_id: str) -> str:
    return seeker_id if role == "seeker" else provider_id


def _live(session: bulk.LockedSession | None, *, user_id: str, role: str) -> bulk.LockedSession:
    """``lock_session_for`` then ``_require_live``, on the rows the batch locked."""
    if session is None or _participant(role, session.seeker_id, session.provider_id) != user_id:
        raise SessionNotFound()
    if not is_live(SessionState(session.connection_state)):
        raise InvalidState()
    return session


class _Writes:
    """The rows a batch will write, gathered while the frames are decided in order."""

    def __init__(self) -> None:
        self.messages: list[bulk.NewMessage] = []
        self.events: list[bulk.NewEvent] = []
        self.opened: dict[int, uuid.UUID] = {}
        self.touched: dict[int, bulk.LockedSession] = {}
        self.statuses: dict[int, bulk.StatusChange] = {}

    def append(
        self,
        session: bulk.LockedSession,
        pending: list[chat.Event],
        now: datetime,
    ) -> list[LoggedEvent]:
        """``events.append`` on the locked row: number the events, queue their rows."""
        if not pending:
            return []
        first = session.last_seq + 1
        session.last_seq += len(pending)
        self.touched[session.id] = session
        logged = []
        for i, (kind, data) in enumerate(pending):
            event = LoggedEvent(
                session_id=session.session_id, seq=first + i, kind=kind, data=data, created_at=now
            )
            logged.append(event)
            self.events.append(bulk.NewEvent(session.id, event.seq, kind, json.dumps(data)))
        return logged


async def _plan_and_write(
    conn: bulk.Driver, frames: list[ChatFrame], now: datetime
) -> list[_Planned]:
    receipts = [f.message_id for f in frames if f.action != "message" and f.message_id]
    found: dict[uuid.UUID, bulk.MessageInSession] = {}
    if receipts:
        rows = await bulk.unexpired_messages(conn, receipts, now=now)
        found = {row.message_id: row for row in rows}
    wanted = {f.session_id for f in frames if f.action == "message" and f.session_id}
    wanted |= {row.session_id for row in found.values()}
    sessions = {s.session_id: s for s in await bulk.lock_sessions(conn, sorted(wanted))}
    statuses: dict[int, str] = {}
    if found:
        statuses = await bulk.message_statuses(conn, [row.message_pk for row in found.values()])
    stored = await _stored_client_msg_ids(conn, frames, sessions)

    writes = _Writes()
    plans: list[_Planned] = []
    for frame in frames:
        outbox = Outbox(origin=frame.origin)
        try:
            if frame.action == "message":
                answer = _send(frame, sessions, stored, writes, outbox, now)
            else:
                answer = _acknowledge(frame, found, sessions, statuses, writes, outbox, now)
        except WorksessionError as error:
            plans.append(_Planned(frame, error, outbox))
            continue
        plans.append(_Planned(frame, answer, outbox))

    if writes.messages:
        inserted = await bulk.insert_messages(conn, writes.messages, now=now)
        if inserted != len(writes.messages):
            raise BatchConflict("a client_msg_id was taken while the sessions were locked")
    if writes.touched:
        await bulk.update_sessions(
            conn,
            [
                bulk.SessionChange(pk, s.last_seq, writes.opened.get(pk))
                for pk, s in writes.touched.items()
            ],
            now=now,
        )
    if writes.events:
        await bulk.insert_events(conn, writes.events, now=now)
    if writes.statuses:
        await bulk.update_message_statuses(conn, list(writes.statuses.values()), now=now)
    return plans


ClientKey = tuple[int, str, str]


async def _stored_client_msg_ids(
    conn: bulk.Driver, frames: list[ChatFrame], sessions: dict[uuid.UUID, bulk.LockedSession]
) -> dict[ClientKey, bulk.StoredMessage]:
    """The messages already stored under the ``client_msg_id`` of the batch's messages.
    Read under the session locks: nobody else inserts into those sessions meanwhile."""
    keys: set[ClientKey] = set()
    for f in frames:
        if f.action == "message" and f.client_msg_id is not None and f.session_id is not None:
            session = sessions.get(f.session_id)
            if session is not None:
                keys.add((session.id, f.user_id, f.client_msg_id))
    if not keys:
        return {}
    rows = await bulk.messages_by_client_msg_id(conn, sorted(keys))
    return {(r.session_pk, r.sender_id, r.client_msg_id): r for r in rows}


def _original_ack(session: bulk.LockedSession, message: bulk.StoredMessage) -> Answer:
    assert message.seq is not None  # stored with the message, in its transaction
    event = LoggedEvent(
        session_id=session.session_id,
        seq=message.seq,
        kind="chat_message",
        data=chat.message_data(
            message.message_id, message.sender_type, message.message_text, message.client_msg_id
        ),
        created_at=message.created_at,
    )
    return Answer(frame=chat_message_ack(event))


def _send(
    frame: ChatFrame,
    sessions: dict[uuid.UUID, bulk.LockedSession],
    stored: dict[ClientKey, bulk.StoredMessage],
    writes: _Writes,
    outbox: Outbox,
    now: datetime,
) -> Answer:
    assert frame.session_id is not None
    session = _live(sessions.get(frame.session_id), user_id=frame.user_id, role=frame.role)
    key: ClientKey | None = None
    if frame.client_msg_id is not None:
        key = (session.id, frame.user_id, frame.client_msg_id)
        if (original := stored.get(key)) is not None:
            return _original_ack(session, original)
    message_id = uuid.uuid4()
    pending: list[chat.Event] = []
    if session.chat_room_id is None:
        room = uuid.uuid4()
        session.chat_room_id = writes.opened[session.id] = room
        pending.append(("chat_ready", {"chat_room_id": str(room)}))
    pending.append(
        ("chat_message", chat.message_data(message_id, frame.role, frame.text, frame.client_msg_id))
    )
    logged = writes.append(session, pending, now)
    writes.messages.append(
        bulk.NewMessage(
            message_id,
            session.id,
            frame.user_id,
            frame.role,
            frame.text,
            frame.client_msg_id,
            logged[-1].seq,
        )
    )
    if key is not None:
        # A retry in the same batch is answered like one after the COMMIT would be.
        stored[key] = bulk.StoredMessage(
            session.id,
            frame.user_id,
            key[2],
            message_id,
            frame.role,
            frame.text,
            logged[-1].seq,
            now,
        )
    for event in logged:
        outbox.event(event, seeker_id=session.seeker_id, provider_id=session.provider_id)
    return Answer(events=tuple(logged))


def _acknowledge(
    frame: ChatFrame,
    found: dict[uuid.UUID, bulk.MessageInSession],
    sessions: dict[uuid.UUID, bulk.LockedSession],
    statuses: dict[int, str],
    writes: _Writes,
    outbox: Outbox,
    now: datetime,
) -> Answer:
    assert frame.message_id is not None
    assert frame.action != "message"
    message = found.get(frame.message_id)
    if message is None or (
        _participant(frame.role, message.seeker_id, message.provider_id) != frame.user_id
    ):
        raise MessageNotFound()
    if message.sender_type == frame.role:
        raise Forbidden("You cannot acknowledge your own message")
    session = _live(sessions.get(message.session_id), user_id=frame.user_id, role=frame.role)
    pending: list[chat.Event] = []
    for step in chat.STEPS_TO[frame.action]:
        pk = message.message_pk
        if statuses.get(pk) != _PREVIOUS[step].value:
            continue
        statuses[pk] = step.value
        change = writes.statuses.get(pk) or bulk.StatusChange(pk, step.value, None, None)
        if step is MessageStatus.DELIVERED:
            change = change._replace(status=step.value, delivered_at=now)
            metrics.message_delivered(created_at=message.created_at, delivered_at=now)
        else:
            change = change._replace(status=step.value, read_at=now)
        writes.statuses[pk] = change
        pending.append(chat.status_event(message.message_id, message.sender_type, step))
    logged = writes.append(session, pending, now)
    for event in logged:
        outbox.event(event, seeker_id=session.seeker_id, provider_id=session.provider_id)
    return Answer(answers=False)
