"""The per-session event log.

Every event a participant must not miss is appended here **in the same transaction** as
the change it reports, numbered by the session's ``seq`` (1, 2, 3, ... without gaps: the
number comes from ``UPDATE work_sessions SET last_seq = last_seq + n ... RETURNING``, which
also serialises writers of one session). Delivery is built on this log: the broker may
drop a message, but a socket or a client that sees a gap reads the missing events back
from here, and ``resume`` replays them, rendered by the same pure function as the live path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from worksession.kit.clock import isoformat_z, utcnow
from worksession.sessions import repository
from worksession.sessions.repository import EventRow


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    session_id: uuid.UUID
    seq: int
    kind: str
    data: dict[str, Any]
    created_at: datetime

    def to_wire(self) -> dict[str, Any]:
        return {
            "session_id": str(self.session_id),
            "seq": self.seq,
            "kind": self.kind,
            "data": self.data,
            "created_at": isoformat_z(self.created_at),
        }

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> LoggedEvent:
        return cls(
            session_id=uuid.UUID(raw["session_id"]),
            seq=int(raw["seq"]),
            kind=str(raw["kind"]),
            data=dict(raw["data"]),
            created_at=datetime.fromisoformat(raw["created_at"]),
        )


async def append(
    db: AsyncSession,
    *,
    session_pk: int,
    session_id: uuid.UUID,
    events: list[tuple[str, dict[str, Any]]],
    now: datetime | None = None,
) -> list[LoggedEvent]:
    """Append ``events`` (kind, data) to the session's log; returns them with their seq."""
    if not events:
        return []
    now = now or utcnow()
    last = await repository.bump_last_seq(db, session_pk, len(events))
    first = last - len(events) + 1
    logged = [
        LoggedEvent(session_id=session_id, seq=first + i, kind=kind, data=data, created_at=now)
        for i, (kind, data) in enumerate(events)
    ]
    await repository.insert_events(
        db,
        [EventRow(session_pk, e.seq, e.kind, e.data, e.created_at) for e in logged],
    )
    return logged


async def read_after(
    db: AsyncSession, *, session_id: uuid.UUID, after_seq: int, before_seq: int | None = None
) -> list[LoggedEvent]:
    """Events with ``after_seq < seq < before_seq`` (or to the end), in order."""
    rows = await repository.events_after(
        db, session_id=session_id, after_seq=after_seq, before_seq=before_seq
    )
    return [
        LoggedEvent(
            session_id=session_id, seq=r.seq, kind=r.kind, data=r.data, created_at=r.created_at
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the socket that sent a frame is told directly, ahead of the broker's copy.

    ``events`` are delivered to it in order through its seq tracker (so the broker's copy of
    the same events is dropped as already seen); ``frame`` is a reply outside the log,
    already rendered (a retried chat message's original ack, a repeated ``chat_ready``, a
    ``work_declined``). When ``answers`` is true the gateway copies the frame's
    ``request_id`` into the last of them.
    """

    events: tuple[LoggedEvent, ...] = ()
    frame: dict[str, Any] | None = None
    answers: bool = True
