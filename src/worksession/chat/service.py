"""Anonymous chat (PROTOCOL 5): the room, messages, receipts and typing indicators.

Messages and receipts are logged events (the recipient gets them on ``resume`` even if the
broker dropped them); typing is ephemeral and published straight to the other participant.
Chat frames never carry a user id: the other side only ever learns the ``sender_type``.
Nothing here logs message text.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from worksession.chat import repository as chat_repository
from worksession.errors import Forbidden, InvalidState, MessageNotFound, SessionNotFound
from worksession.kit.clock import utcnow
from worksession.models import ChatMessage, WorkSession
from worksession.ops import metrics
from worksession.outbox import Outbox, Role
from worksession.sessions import events
from worksession.sessions import repository as session_repository
from worksession.sessions.events import Answer, LoggedEvent
from worksession.sessions.render import chat_message_ack
from worksession.sessions.repository import lock_session_for
from worksession.sessions.states import MessageStatus, SessionState, is_live

Event = tuple[str, dict[str, Any]]


def _require_live(session: WorkSession | None) -> WorkSession:
    if session is None:
        raise SessionNotFound()
    if not is_live(SessionState(session.connection_state)):
        raise InvalidState()
    return session


def _other_participant(role: str, *, seeker_id: str, provider_id: str) -> tuple[Role, str]:
    return ("provider", provider_id) if role == "seeker" else ("seeker", seeker_id)


def _publish(outbox: Outbox, session: WorkSession, logged: list[LoggedEvent]) -> None:
    for event in logged:
        outbox.event(event, seeker_id=session.seeker_id, provider_id=session.provider_id)


async def _open_chat_room(db: AsyncSession, session: WorkSession, now: datetime) -> Event:
    """Give the session its room (the caller holds the lock); the ``chat_ready`` to log."""
    chat_room_id = uuid.uuid4()
    await chat_repository.open_chat_room(
        db, session_pk=session.id, chat_room_id=chat_room_id, now=now
    )
    return ("chat_ready", {"chat_room_id": str(chat_room_id)})


async def start_chat(
    db: AsyncSession,
    outbox: Outbox,
    *,
    session_id: uuid.UUID,
    user_id: str,
    role: str,
    now: datetime | None = None,
) -> Answer:
    """Open the session's chat room, announcing ``chat_ready`` to both participants.

    A room that already exists is answered to the caller alone with a ``chat_ready`` frame
    that deliberately has no ``seq``: it repeats an old event rather than being a new one,
    and a made-up or reused seq would confuse the client's gap detection.
    """
    now = now or utcnow()
    session = _require_live(
        await lock_session_for(db, session_id=session_id, user_id=user_id, role=role)
    )
    if session.chat_room_id is not None:
        return Answer(
            frame={
                "type": "chat_ready",
                "session_id": str(session.session_id),
                "chat_room_id": str(session.chat_room_id),
            }
        )
    ready = await _open_chat_room(db, session, now)
    logged = await events.append(
        db, session_pk=session.id, session_id=session.session_id, events=[ready], now=now
    )
    _publish(outbox, session, logged)
    return Answer(events=tuple(logged))


def message_data(
    message_id: uuid.UUID, sender_type: str, text: str, client_msg_id: str | None
) -> dict[str, Any]:
    return {
        "message_id": str(message_id),
        "sender_type": sender_type,
        "message": text,
        "client_msg_id": client_msg_id,
    }


def _original_ack(session: WorkSession, message: ChatMessage) -> Answer:
    """The ack the first send of ``message`` got, rebuilt from its row, byte for byte."""
    # The seq is stored in the transaction that inserted the message, so a committed
    # message always has one.
    assert message.seq is not None
    event = LoggedEvent(
        session_id=session.session_id,
        seq=message.seq,
        kind="chat_message",
        data=message_data(
            message.message_id, message.sender_type, message.message_text, message.client_msg_id
        ),
        created_at=message.created_at,
    )
    return Answer(frame=chat_message_ack(event))


async def send_message(
    db: AsyncSession,
    outbox: Outbox,
    *,
    session_id: uuid.UUID,
    user_id: str,
    role: str,
    text: str,
    client_msg_id: str | None,
    now: datetime | None = None,
) -> Answer:
    """Store and announce a chat message (``text`` is already validated), starting the chat
    first if needed. A ``client_msg_id`` this sender already used in this session stores
    and publishes nothing and answers the original ack again."""
    now = now or utcnow()
    session = _require_live(
        await lock_session_for(db, session_id=session_id, user_id=user_id, role=role)
    )
    message_id = uuid.uuid4()
    # The insert itself is the duplicate check, so a retry racing its original cannot
    # slip between a lookup and the write.
    stored = await chat_repository.insert_message_unless_duplicate(
        db,
        session_pk=session.id,
        message_id=message_id,
        sender_id=user_id,
        sender_type=role,
        text=text,
        client_msg_id=client_msg_id,
        now=now,
    )
    if not stored:
        assert client_msg_id is not None  # without one nothing can conflict
        original = await chat_repository.message_by_client_msg_id(
            db, session_pk=session.id, sender_id=user_id, client_msg_id=client_msg_id
        )
        assert original is not None  # the conflicting row is committed: we saw it conflict
        return _original_ack(session, original)

    pending: list[Event] = []
    if session.chat_room_id is None:
        pending.append(await _open_chat_room(db, session, now))
    pending.append(("chat_message", message_data(message_id, role, text, client_msg_id)))
    logged = await events.append(
        db, session_pk=session.id, session_id=session.session_id, events=pending, now=now
    )
    await chat_repository.set_message_seq(db, message_id=message_id, seq=logged[-1].seq)
    _publish(outbox, session, logged)
    return Answer(events=tuple(logged))


# ``read`` implies ``delivered``: the steps an ack asks for, in order.
STEPS_TO: dict[str, tuple[MessageStatus, ...]] = {
    "delivered": (MessageStatus.DELIVERED,),
    "read": (MessageStatus.DELIVERED, MessageStatus.READ),
}


async def acknowledge(
    db: AsyncSession,
    outbox: Outbox,
    *,
    message_id: uuid.UUID,
    user_id: str,
    role: str,
    status: Literal["delivered", "read"],
    now: datetime | None = None,
) -> Answer:
    """Move a received message forward to ``delivered`` or ``read``; never back.

    Each step taken is one ``message_status`` event, so a ``read`` on a ``sent`` message
    logs ``delivered`` then ``read`` in one append: the sender sees every step exactly once
    and a client that only handles single steps stays right. A repeated or backward ack
    changes and sends nothing. The answer is empty: receipts have no ack, the sender learns
    of them through the broker.
    """
    now = now or utcnow()
    found = await chat_repository.message_for_participant(
        db, message_id=message_id, user_id=user_id, role=role, now=now
    )
    if found is None:
        raise MessageNotFound()
    message = found.message
    if message.sender_type == role:
        raise Forbidden("You cannot acknowledge your own message")
    session = _require_live(
        await lock_session_for(db, session_id=found.session_id, user_id=user_id, role=role)
    )
    # One conditional UPDATE per step: concurrent acks cannot both take the same step.
    taken = [
        status_event(message.message_id, message.sender_type, step)
        for step in STEPS_TO[status]
        if await chat_repository.advance_message_status(db, message_pk=message.id, to=step, now=now)
    ]
    if any(data["status"] == MessageStatus.DELIVERED.value for _, data in taken):
        metrics.message_delivered(created_at=message.created_at, delivered_at=now)
    logged = await events.append(
        db, session_pk=session.id, session_id=session.session_id, events=taken, now=now
    )
    _publish(outbox, session, logged)
    return Answer(answers=False)


def status_event(message_id: uuid.UUID, sender_type: str, status: MessageStatus) -> Event:
    return (
        "message_status",
        {"message_id": str(message_id), "status": status.value, "sender_type": sender_type},
    )


def _typing_frame(session_id: uuid.UUID, sender_type: str, is_typing: bool) -> dict[str, Any]:
    return {
        "type": "typing_indicator",
        "session_id": str(session_id),
        "sender_type": sender_type,
        "is_typing": is_typing,
    }


async def set_typing(
    db: AsyncSession,
    outbox: Outbox,
    *,
    session_id: uuid.UUID,
    user_id: str,
    role: str,
    is_typing: bool,
    now: datetime | None = None,
) -> None:
    """Record whether the user is typing and tell the other participant when that changed.

    A repeated ``true`` only refreshes ``last_typing_at`` (which the auto-stop keys off)
    and sends nothing: clients repeat it every few seconds while typing, and the peer
    already shows the indicator. A ``false`` when not typing sends nothing either.
    """
    now = now or utcnow()
    session = _require_live(
        await session_repository.session_for(db, session_id=session_id, user_id=user_id, role=role)
    )
    changed = await chat_repository.store_typing(
        db,
        session_pk=session.id,
        user_id=user_id,
        user_type=role,
        is_typing=is_typing,
        now=now,
    )
    if changed:
        other_role, other_id = _other_participant(
            role, seeker_id=session.seeker_id, provider_id=session.provider_id
        )
        outbox.frame(other_role, other_id, _typing_frame(session.session_id, role, is_typing))


async def stop_stale_typing(
    db: AsyncSession, outbox: Outbox, *, timeout_s: float, now: datetime | None = None
) -> int:
    """Switch off every indicator whose last ``true`` is ``timeout_s`` old and tell the
    other participant of a live session; returns how many were switched off."""
    now = now or utcnow()
    stopped = await chat_repository.stop_typing_idle_since(
        db, now - timedelta(seconds=timeout_s), now=now
    )
    sessions = await chat_repository.participants_of_sessions(
        db, {row.session_pk for row in stopped}
    )
    by_pk = {s.session_pk: s for s in sessions}
    for row in stopped:
        session = by_pk.get(row.session_pk)
        if session is None or not is_live(SessionState(session.connection_state)):
            continue
        other_role, other_id = _other_participant(
            row.user_type, seeker_id=session.seeker_id, provider_id=session.provider_id
        )
        outbox.frame(other_role, other_id, _typing_frame(session.session_id, row.user_type, False))
    return len(stopped)
