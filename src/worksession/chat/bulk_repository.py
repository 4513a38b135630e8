"""Set-based SQL for a batch of chat frames, on asyncpg's own connection (PostgreSQL only).

Each function is one statement for the whole batch, whatever its size: below the ORM a
statement costs about one round trip, where the same work frame by frame through the ORM
cost a millisecond of CPU per statement. The caller holds one transaction around them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

Driver = Any
"""An asyncpg connection (asyncpg ships no type information)."""


class MessageInSession(NamedTuple):
    """A message and the participants of its session, read before the session is locked."""

    message_pk: int
    message_id: uuid.UUID
    sender_type: str
    created_at: datetime
    session_id: uuid.UUID
    seeker_id: str
    provider_id: str


async def unexpired_messages(
    conn: Driver, message_ids: Sequence[uuid.UUID], *, now: datetime
) -> list[MessageInSession]:
    rows = await conn.fetch(
        "SELECT m.id, m.message_id, m.sender_type, m.created_at,"
        " s.session_id, s.seeker_id, s.provider_id"
        " FROM chat_messages m JOIN work_sessions s ON s.id = m.session_id"
        " WHERE m.message_id = ANY($1::uuid[])"
        " AND (m.expires_at IS NULL OR m.expires_at > $2)",
        list(message_ids),
        now,
    )
    return [MessageInSession(*row) for row in rows]


@dataclass(slots=True)
class LockedSession:
    id: int
    session_id: uuid.UUID
    seeker_id: str
    provider_id: str
    connection_state: str
    chat_room_id: uuid.UUID | None
    last_seq: int


async def lock_sessions(conn: Driver, session_ids: Sequence[uuid.UUID]) -> list[LockedSession]:
    """Lock the sessions in primary key order: two batches (in two workers) that share
    sessions take their locks in the same order, so they wait for each other instead of
    deadlocking. PostgreSQL locks the rows as the sorted result is read."""
    rows = await conn.fetch(
        "SELECT id, session_id, seeker_id, provider_id, connection_state, chat_room_id, last_seq"
        " FROM work_sessions WHERE session_id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        list(session_ids),
    )
    return [LockedSession(*row) for row in rows]


async def message_statuses(conn: Driver, message_pks: Sequence[int]) -> dict[int, str]:
    """Read under the session locks: every status change happens under its session's lock."""
    rows = await conn.fetch(
        "SELECT id, delivery_status FROM chat_messages WHERE id = ANY($1::int[])",
        list(message_pks),
    )
    return {row[0]: row[1] for row in rows}


class StoredMessage(NamedTuple):
    session_pk: int
    sender_id: str
    client_msg_id: str
    message_id: uuid.UUID
    sender_type: str
    message_text: str
    seq: int | None
    created_at: datetime


async def messages_by_client_msg_id(
    conn: Driver, keys: Sequence[tuple[int, str, str]]
) -> list[StoredMessage]:
    """The stored messages among ``(session_pk, sender_id, client_msg_id)`` keys."""
    rows = await conn.fetch(
        "SELECT m.session_id, m.sender_id, m.client_msg_id, m.message_id, m.sender_type,"
        " m.message_text, m.seq, m.created_at"
        " FROM chat_messages m"
        " JOIN unnest($1::int[], $2::text[], $3::text[]) AS k(session_pk, sender_id, cmid)"
        " ON m.session_id = k.session_pk AND m.sender_id = k.sender_id"
        " AND m.client_msg_id = k.cmid",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    return [StoredMessage(*row) for row in rows]


class NewMessage(NamedTuple):
    message_id: uuid.UUID
    session_pk: int
    sender_id: str
    sender_type: str
    text: str
    client_msg_id: str | None
    seq: int


async def insert_messages(conn: Driver, messages: Sequence[NewMessage], *, now: datetime) -> int:
    """Insert ``sent`` messages, their seq included; returns how many were stored (a
    ``client_msg_id`` already taken stores nothing, as on the one-frame path)."""
    rows = await conn.fetch(
        "INSERT INTO chat_messages (message_id, session_id, sender_id, sender_type,"
        " message_text, client_msg_id, seq, delivery_status, created_at, updated_at)"
        " SELECT m.*, 'sent', $8, $8 FROM unnest($1::uuid[], $2::int[], $3::text[],"
        " $4::text[], $5::text[], $6::text[], $7::int[]) AS m"
        " ON CONFLICT (session_id, sender_id, client_msg_id) DO NOTHING RETURNING id",
        [m.message_id for m in messages],
        [m.session_pk for m in messages],
        [m.sender_id for m in messages],
        [m.sender_type for m in messages],
        [m.text for m in messages],
        [m.client_msg_id for m in messages],
        [m.seq for m in messages],
        now,
    )
    return len(rows)


class SessionChange(NamedTuple):
    session_pk: int
    last_seq: int
    opened_room: uuid.UUID | None


async def update_sessions(conn: Driver, changes: Sequence[SessionChange], *, now: datetime) -> None:
    """Store each session's new ``last_seq`` and, where the batch opened it, its chat room
    (``updated_at`` moves only then, as when a frame opens the room alone)."""
    await conn.execute(
        "UPDATE work_sessions s SET last_seq = v.last_seq,"
        " chat_room_id = COALESCE(v.room, s.chat_room_id),"
        " chat_started_at = CASE WHEN v.room IS NULL THEN s.chat_started_at ELSE $4 END,"
        " updated_at = CASE WHEN v.room IS NULL THEN s.updated_at ELSE $4 END"
        " FROM unnest($1::int[], $2::int[], $3::uuid[]) AS v(id, last_seq, room)"
        " WHERE s.id = v.id",
        [c.session_pk for c in changes],
        [c.last_seq for c in changes],
        [c.opened_room for c in changes],
        now,
    )


class NewEvent(NamedTuple):
    session_pk: int
    seq: int
    kind: str
    data_json: str


async def insert_events(conn: Driver, rows: Sequence[NewEvent], *, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO session_events (session_id, seq, kind, data, created_at)"
        " SELECT e.session_pk, e.seq, e.kind, e.data::jsonb, $5"
        " FROM unnest($1::int[], $2::int[], $3::text[], $4::text[])"
        " AS e(session_pk, seq, kind, data)",
        [r.session_pk for r in rows],
        [r.seq for r in rows],
        [r.kind for r in rows],
        [r.data_json for r in rows],
        now,
    )


class StatusChange(NamedTuple):
    message_pk: int
    status: str
    delivered_at: datetime | None
    read_at: datetime | None


async def update_message_statuses(
    conn: Driver, changes: Sequence[StatusChange], *, now: datetime
) -> None:
    await conn.execute(
        "UPDATE chat_messages m SET delivery_status = v.status,"
        " delivered_at = COALESCE(v.delivered_at, m.delivered_at),"
        " read_at = COALESCE(v.read_at, m.read_at), updated_at = $5"
        " FROM unnest($1::int[], $2::text[], $3::timestamptz[], $4::timestamptz[])"
        " AS v(id, status, delivered_at, read_at) WHERE m.id = v.id",
        [c.message_pk for c in changes],
        [c.status for c in changes],
        [c.delivered_at for c in changes],
        [c.read_at for c in changes],
        now,
    )
