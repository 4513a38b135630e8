"""The per-session event log.

Every event a participant must not miss is a row of ``session_events``, written **in the
same transaction** as the change it reports and numbered by the session's ``seq`` (1, 2,
3, ... without gaps: the deciding function takes the next numbers from the locked session
row, and the pipeline stores the row's new ``last_seq`` with the events). Delivery is built
on this log: the broker may drop a message, but a socket or a client that sees a gap reads
the missing events back, and ``resume`` replays them, rendered by the same pure function as
the live path.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worksession.kit.clock import isoformat_z

NewEvent = tuple[str, dict[str, Any]]
"""An event to log: its kind and its data."""


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


def numbered(
    session_id: uuid.UUID, last_seq: int, new: Sequence[NewEvent], now: datetime
) -> tuple[LoggedEvent, ...]:
    """``new`` as the events that follow ``last_seq`` in the session's log."""
    return tuple(
        LoggedEvent(session_id=session_id, seq=last_seq + i, kind=kind, data=data, created_at=now)
        for i, (kind, data) in enumerate(new, start=1)
    )
