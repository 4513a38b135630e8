"""SQL for chat messages and typing indicators."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.kit.db import dialect_insert
from worksession.models import ChatMessage, TypingIndicator, WorkSession
from worksession.sessions.states import MessageStatus


async def delete_expired_messages(db: AsyncSession, *, now: datetime) -> int:
    result = await db.execute(delete(ChatMessage).where(ChatMessage.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_typing_idle_since(db: AsyncSession, cutoff: datetime) -> int:
    result = await db.execute(
        delete(TypingIndicator).where(TypingIndicator.last_typing_at <= cutoff)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- chat service queries --------------------------------------------------------------------

_CLIENT_MSG_KEY = ("session_id", "sender_id", "client_msg_id")
_TYPING_KEY = ("session_id", "user_id")


async def open_chat_room(
    db: AsyncSession, *, session_pk: int, chat_room_id: uuid.UUID, now: datetime
) -> None:
    """Give the session its chat room; the caller holds the session lock."""
    await db.execute(
        update(WorkSession)
        .where(WorkSession.id == session_pk)
        .values(chat_room_id=chat_room_id, chat_started_at=now, updated_at=now)
    )


async def insert_message_unless_duplicate(
    db: AsyncSession,
    *,
    session_pk: int,
    message_id: uuid.UUID,
    sender_id: str,
    sender_type: str,
    text: str,
    client_msg_id: str | None,
    now: datetime,
) -> bool:
    """Store a new ``sent`` message; False when this sender already used ``client_msg_id``.

    ``ON CONFLICT DO NOTHING`` rather than catching the IntegrityError in a SAVEPOINT: on
    SQLite (pysqlite's deferred BEGIN) a SAVEPOINT that opens the transaction is committed
    by its RELEASE, so a later rollback would keep the message. On PostgreSQL a concurrent
    insert of the same key waits for the other transaction and then does nothing.
    """
    statement = (
        dialect_insert(db, ChatMessage)
        .values(
            message_id=message_id,
            session_id=session_pk,
            sender_id=sender_id,
            sender_type=sender_type,
            message_text=text,
            client_msg_id=client_msg_id,
            delivery_status=MessageStatus.SENT.value,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=list(_CLIENT_MSG_KEY))
        .returning(ChatMessage.id)
    )
    return (await db.execute(statement)).scalar_one_or_none() is not None


async def message_by_client_msg_id(
    db: AsyncSession, *, session_pk: int, sender_id: str, client_msg_id: str
) -> ChatMessage | None:
    query = select(ChatMessage).where(
        ChatMessage.session_id == session_pk,
        ChatMessage.sender_id == sender_id,
        ChatMessage.client_msg_id == client_msg_id,
    )
    return (await db.execute(query)).scalar_one_or_none()


async def set_message_seq(db: AsyncSession, *, message_id: uuid.UUID, seq: int) -> None:
    await db.execute(
        update(ChatMessage).where(ChatMessage.message_id == message_id).values(seq=seq)
    )


class MessageInSession(NamedTuple):
    message: ChatMessage
    session_id: uuid.UUID


async def message_for_participant(
    db: AsyncSession, *, message_id: uuid.UUID, user_id: str, role: str, now: datetime
) -> MessageInSession | None:
    """The unexpired message if it belongs to a session ``user_id`` takes part in as ``role``.

    Only the session's UUID comes back, not the row: the caller locks the session next, and
    a row loaded here would sit in the identity map with its pre-lock state.
    """
    query = (
        select(ChatMessage, WorkSession.session_id)
        .join(WorkSession, WorkSession.id == ChatMessage.session_id)
        .where(
            ChatMessage.message_id == message_id,
            WorkSession.participant(role) == user_id,
            or_(ChatMessage.expires_at.is_(None), ChatMessage.expires_at > now),
        )
    )
    row = (await db.execute(query)).first()
    return None if row is None else MessageInSession(row[0], row[1])


# Each step moves exactly one status forward, so the WHERE names its one predecessor.
_STATUS_STEPS: dict[MessageStatus, tuple[MessageStatus, str]] = {
    MessageStatus.DELIVERED: (MessageStatus.SENT, "delivered_at"),
    MessageStatus.READ: (MessageStatus.DELIVERED, "read_at"),
}


async def advance_message_status(
    db: AsyncSession, *, message_pk: int, to: MessageStatus, now: datetime
) -> bool:
    """Move the message one step forward to ``to``; False when it is not right behind it."""
    previous, stamped = _STATUS_STEPS[to]
    result = await db.execute(
        update(ChatMessage)
        .where(ChatMessage.id == message_pk, ChatMessage.delivery_status == previous.value)
        .values({"delivery_status": to.value, stamped: now, "updated_at": now})
        .returning(ChatMessage.id)
    )
    return result.scalar_one_or_none() is not None


def _typing_key(session_pk: int, user_id: str) -> ColumnElement[bool]:
    return and_(TypingIndicator.session_id == session_pk, TypingIndicator.user_id == user_id)


async def _typing_state_for_update(db: AsyncSession, session_pk: int, user_id: str) -> bool | None:
    query = select(TypingIndicator.is_typing).where(_typing_key(session_pk, user_id))
    return (await db.execute(query.with_for_update())).scalar_one_or_none()


async def store_typing(
    db: AsyncSession,
    *,
    session_pk: int,
    user_id: str,
    user_type: str,
    is_typing: bool,
    now: datetime,
) -> bool:
    """Record ``is_typing`` at ``now``; True when it differs from what was stored.

    No row counts as not typing. The old value is read under a row lock and a first row is
    inserted with ``ON CONFLICT DO NOTHING``, so two frames of one user (two devices) racing
    each other are settled in order: a blind upsert would let both report a change, or a
    ``false`` landing on a concurrent first ``true`` report none and leave the peer seeing
    "typing" with no auto-stop to clear it.
    """
    previous = await _typing_state_for_update(db, session_pk, user_id)
    if previous is None:
        inserted = await db.execute(
            dialect_insert(db, TypingIndicator)
            .values(
                session_id=session_pk,
                user_id=user_id,
                user_type=user_type,
                is_typing=is_typing,
                last_typing_at=now,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=list(_TYPING_KEY))
            .returning(TypingIndicator.id)
        )
        if inserted.scalar_one_or_none() is not None:
            return is_typing
        previous = await _typing_state_for_update(db, session_pk, user_id)
    await db.execute(
        update(TypingIndicator)
        .where(_typing_key(session_pk, user_id))
        .values(is_typing=is_typing, last_typing_at=now, updated_at=now)
    )
    return bool(previous) != is_typing


class StoppedTyping(NamedTuple):
    session_pk: int
    user_type: str


async def stop_typing_idle_since(
    db: AsyncSession, cutoff: datetime, *, now: datetime
) -> list[StoppedTyping]:
    """Switch off every indicator still typing whose last ``true`` is at or before ``cutoff``."""
    result = await db.execute(
        update(TypingIndicator)
        .where(TypingIndicator.is_typing.is_(True), TypingIndicator.last_typing_at <= cutoff)
        .values(is_typing=False, updated_at=now)
        .returning(TypingIndicator.session_id, TypingIndicator.user_type)
        .execution_options(synchronize_session=False)
    )
    return [StoppedTyping(pk, user_type) for pk, user_type in result.all()]


class SessionParticipants(NamedTuple):
    session_pk: int
    session_id: uuid.UUID
    seeker_id: str
    provider_id: str
    connection_state: str


async def participants_of_sessions(
    db: AsyncSession, session_pks: Collection[int]
) -> list[SessionParticipants]:
    if not session_pks:
        return []
    query = select(
        WorkSession.id,
        WorkSession.session_id,
        WorkSession.seeker_id,
        WorkSession.provider_id,
        WorkSession.connection_state,
    ).where(WorkSession.id.in_(sorted(set(session_pks))))
    return [SessionParticipants(*row) for row in (await db.execute(query)).all()]


# --- history (REST) ---------------------------------------------------------------------


async def history_page(
    db: AsyncSession,
    *,
    session_pk: int,
    before: tuple[datetime, int] | None,
    now: datetime,
    limit: int,
) -> list[ChatMessage]:
    """Up to ``limit`` unexpired messages of the session, newest first by ``(created_at, id)``,
    strictly older than ``before`` (a ``(created_at, id)`` pair) when given.

    ``(created_at, id) < (:c, :i)`` is spelled out with OR rather than as a row value so
    that it reads the same on every backend; the extra ``created_at <= :c`` is implied by
    it but gives the planner a range bound on the ``(session_id, created_at, id)`` index, so
    a deep page starts its backward scan at the cursor instead of filtering its way there.
    """
    query = select(ChatMessage).where(
        ChatMessage.session_id == session_pk,
        or_(ChatMessage.expires_at.is_(None), ChatMessage.expires_at > now),
    )
    if before is not None:
        created_at, message_pk = before
        query = query.where(
            ChatMessage.created_at <= created_at,
            or_(
                ChatMessage.created_at < created_at,
                and_(ChatMessage.created_at == created_at, ChatMessage.id < message_pk),
            ),
        )
    query = query.order_by(ChatMessage.created_at.desc(), ChatMessage.id.desc()).limit(limit)
    return list((await db.execute(query)).scalars())
