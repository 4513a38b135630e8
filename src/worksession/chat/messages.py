"""Anonymous chat (PROTOCOL 5): the room and its messages.

Messages are logged events: the recipient gets them on ``resume`` even if the broker
dropped them. Chat frames never carry a user id: the other side only ever learns the
``sender_type``. Nothing here logs message text.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from worksession.errors import RateLimited
from worksession.eventlog.events import LoggedEvent, NewEvent
from worksession.eventlog.render import chat_message_ack
from worksession.pipeline.commands import SendMessage, StartChat
from worksession.pipeline.decision import (
    ANSWERED_BY_EVENT,
    AnswerFrame,
    Decision,
    PutMessage,
    PutSession,
)
from worksession.pipeline.rows import MessageRow, SessionRow, evolve
from worksession.pipeline.world import World
from worksession.protocol.outbound import ChatReady
from worksession.sessions.access import changed, live_session_of, logged
from worksession.sessions.states import MessageStatus

SESSION_FULL = "This session has reached its message limit; no more messages can be sent"
SESSION_FULL_RETRY_AFTER_MS = 86_400_000
"""The cap does not lift while the session lives: a day, past the life of any session (an
untouched one ends after 12 hours), tells a client that retries on its own not to."""


def decide_start_chat(world: World, command: StartChat, now: datetime) -> Decision:
    """Open the session's chat room, announcing ``chat_ready`` to both participants.

    A room that already exists is answered to the caller alone with a ``chat_ready`` frame
    that deliberately has no ``seq``: it repeats an old event rather than being a new one,
    and a made-up or reused seq would confuse the client's gap detection.
    """
    session = live_session_of(world.session(command.session_id), command.actor)
    if session.chat_room_id is not None:
        again = ChatReady(
            type="chat_ready",
            session_id=str(session.session_id),
            chat_room_id=str(session.chat_room_id),
        )
        return Decision(reply=AnswerFrame(again))
    session, ready = _open_room(session, command.chat_room_id, now)
    session, events = logged(session, now, [ready])
    return Decision(out=events, writes=(PutSession(session),), reply=ANSWERED_BY_EVENT)


def decide_send(world: World, command: SendMessage, now: datetime) -> Decision:
    """Store and announce a chat message, opening the room first if needed.

    A ``client_msg_id`` this sender already used in this session (before, or earlier in
    the same batch) stores and publishes nothing: the sender gets the original ack again,
    byte for byte, even once the session is full.

    A session holds at most ``max_messages_per_session`` messages (both sides together,
    counted by the session's ``message_count``): past that, ``rate_limited``.
    """
    actor = command.actor
    session = live_session_of(world.session(command.session_id), actor)
    if command.client_msg_id is not None:
        key = (session.session_id, actor.user_id, command.client_msg_id)
        if (original := world.sent_message(key)) is not None:
            return Decision(reply=AnswerFrame(chat_message_ack(_as_event(original))))
    if session.message_count >= world.policy.max_messages_per_session:
        raise RateLimited(SESSION_FULL, retry_after_ms=SESSION_FULL_RETRY_AFTER_MS)
    pending: list[NewEvent] = []
    if session.chat_room_id is None:
        session, ready = _open_room(session, command.chat_room_id, now)
        pending.append(ready)
    data = message_data(command.message_id, actor.role, command.text, command.client_msg_id)
    pending.append(("chat_message", data))
    session, events = logged(session, now, pending)
    session = evolve(session, message_count=session.message_count + 1)
    message = MessageRow(
        pk=None,
        message_id=command.message_id,
        session_id=session.session_id,
        sender_id=actor.user_id,
        sender_type=actor.role,
        message_text=command.text,
        client_msg_id=command.client_msg_id,
        seq=events[-1].seq,
        delivery_status=MessageStatus.SENT.value,
        created_at=now,
        updated_at=now,
    )
    return Decision(
        out=events,
        writes=(PutSession(session), PutMessage(message, new=True)),
        reply=ANSWERED_BY_EVENT,
    )


def message_data(
    message_id: uuid.UUID, sender_type: str, text: str, client_msg_id: str | None
) -> dict[str, Any]:
    """The data of a ``chat_message`` event."""
    return {
        "message_id": str(message_id),
        "sender_type": sender_type,
        "message": text,
        "client_msg_id": client_msg_id,
    }


def _open_room(session: SessionRow, room: uuid.UUID, now: datetime) -> tuple[SessionRow, NewEvent]:
    session = changed(session, now, chat_room_id=room, chat_started_at=now)
    return session, ("chat_ready", {"chat_room_id": str(room)})


def _as_event(message: MessageRow) -> LoggedEvent:
    """The event that announced a stored message, rebuilt from its row."""
    # The seq is stored in the transaction that inserted the message, so a committed
    # message always has one.
    assert message.seq is not None
    return LoggedEvent(
        session_id=message.session_id,
        seq=message.seq,
        kind="chat_message",
        data=message_data(
            message.message_id, message.sender_type, message.message_text, message.client_msg_id
        ),
        created_at=message.created_at,
    )
