"""Chat history over REST (PROTOCOL 7): a participant's messages, newest first, page by page.

Only a participant of the session reads it, in the role they took part in, and only the
``sender_type`` of each message ever leaves: never a user id. Expired messages
(``expires_at <= now``) are never returned, even before the sweep has deleted them.

Cursor format (``kit/cursor.py``): the kind tag ``"m1"`` followed by the last returned
message's ``created_at`` in microseconds since the epoch and its row id, URL-safe base64
of ``["m1", <created_at_us>, <id>]``. Pages are ordered by ``(created_at DESC, id DESC)``
and the next page starts strictly after that pair, so messages sharing one timestamp are
neither repeated nor skipped, and a message arriving between two requests cannot shift
the pages (it is newer than every cursor). The cursor reveals a time and an internal row
number, nothing about anyone; it is not signed because the participant check is applied
to every page anyway. ``next_cursor`` is null on the last page: one row beyond ``limit``
is read to know whether more exist, so a client never fetches an empty final page.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, cast

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.chat import repository
from worksession.errors import SessionNotFound
from worksession.kit import cursor
from worksession.kit.clock import UtcTimestamp, utcnow
from worksession.models import ChatMessage, WorkSession
from worksession.sessions import repository as session_repository

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100
CURSOR_KIND: Final = "m1"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_MAX_MICROS: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND


@dataclass(frozen=True, slots=True)
class HistoryCursor:
    """Where the next page starts: strictly older than this message."""

    created_at: datetime
    message_pk: int

    def encode(self) -> str:
        return cursor.encode(
            CURSOR_KIND, (self.created_at - _EPOCH) // _MICROSECOND, self.message_pk
        )

    @classmethod
    def decode(cls, text: str) -> HistoryCursor:
        """Raises ``kit.cursor.InvalidCursor`` for anything this module did not issue."""
        micros, message_pk = cursor.decode(
            CURSOR_KIND, text, arity=2, maxima=(_MAX_MICROS, cursor.MAX_INT4)
        )
        try:
            created_at = _EPOCH + micros * _MICROSECOND
        except OverflowError:
            raise cursor.InvalidCursor("the cursor's time is out of range") from None
        return cls(created_at=created_at, message_pk=message_pk)


class HistoryMessage(BaseModel):
    message_id: uuid.UUID
    sender_type: Literal["seeker", "provider"] = Field(
        description="Who wrote it; the only thing said about the sender"
    )
    message: str
    status: Literal["sent", "delivered", "read"]
    created_at: UtcTimestamp
    delivered_at: UtcTimestamp | None
    read_at: UtcTimestamp | None


class HistoryPage(BaseModel):
    messages: list[HistoryMessage] = Field(description="Newest first")
    next_cursor: str | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page. "
        "Opaque: do not build or alter it."
    )


async def history_page(
    db: AsyncSession,
    *,
    session_id: uuid.UUID,
    user_id: str,
    role: Literal["seeker", "provider"],
    before: HistoryCursor | None = None,
    limit: int = DEFAULT_LIMIT,
    now: datetime | None = None,
) -> HistoryPage:
    """One page of the session's unexpired messages, newest first, for a participant.

    ``SessionNotFound`` when the session does not exist or ``user_id`` is not its ``role``.
    Ended sessions stay readable until their messages expire.
    """
    session = await session_repository.session_for(
        db, session_id=session_id, user_id=user_id, role=role
    )
    return await _page(db, session, before, limit, now)


async def moderation_page(
    db: AsyncSession,
    *,
    session_id: uuid.UUID,
    before: HistoryCursor | None = None,
    limit: int = DEFAULT_LIMIT,
    now: datetime | None = None,
) -> HistoryPage:
    """The same page as :func:`history_page`, of any session, for the internal API
    (moderation and abuse reports, PROTOCOL 7 *1.1*): the same expiry, order and cursor,
    and still only ``sender_type``, since a moderator judges what was said and the
    participants' ids are a separate lookup. ``SessionNotFound`` for no such session."""
    session = await session_repository.session_by_id(db, session_id=session_id)
    return await _page(db, session, before, limit, now)


async def _page(
    db: AsyncSession,
    session: WorkSession | None,
    before: HistoryCursor | None,
    limit: int,
    now: datetime | None,
) -> HistoryPage:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be within 1..{MAX_LIMIT}")
    if session is None:
        raise SessionNotFound()
    rows = await repository.history_page(
        db,
        session_pk=session.id,
        before=None if before is None else (before.created_at, before.message_pk),
        now=now or utcnow(),
        limit=limit + 1,
    )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = HistoryCursor(page[-1].created_at, page[-1].id).encode() if more else None
    return HistoryPage(messages=[_message(m) for m in page], next_cursor=next_cursor)


def _message(row: ChatMessage) -> HistoryMessage:
    return HistoryMessage(
        message_id=row.message_id,
        sender_type=cast(Literal["seeker", "provider"], row.sender_type),
        message=row.message_text,
        status=cast(Literal["sent", "delivered", "read"], row.delivery_status),
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        read_at=row.read_at,
    )
