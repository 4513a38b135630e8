"""What deciding a command produces: the events to log, the frames to send, the rows to write,
the answer to the requester and what the metrics should count.

A :class:`Decision` is plain data. The pipeline applies its writes (to the batch's rows at
once, to the database set-based at the end of the batch), and only after the COMMIT
answers the requester, publishes the events and notices, and records the observations.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from worksession.eventlog.events import LoggedEvent
from worksession.eventlog.outbox import Recipient
from worksession.pipeline.rows import MessageRow, OfferRow, OrderRow, SessionRow
from worksession.protocol.outbound import Outbound

# --- writes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PutSession:
    row: SessionRow
    new: bool = False


@dataclass(frozen=True, slots=True)
class PutMessage:
    row: MessageRow
    new: bool = False


@dataclass(frozen=True, slots=True)
class PutOrder:
    row: OrderRow
    new: bool = False


@dataclass(frozen=True, slots=True)
class PutOffer:
    row: OfferRow
    new: bool = False


@dataclass(frozen=True, slots=True)
class FinishOrder:
    """``accepted -> status`` for the order of a session that ends. Conditional in the
    database: the session is the record of truth for its own end, and an order that had
    moved elsewhere (by hand, or a bug) must not keep its participants in a live session."""

    work_id: int
    status: str


@dataclass(frozen=True, slots=True)
class ExpireChat:
    """Every message of the session expires at ``at``."""

    session_id: uuid.UUID
    at: datetime


Flag = Literal["provider_active", "seeker_searching"]


@dataclass(frozen=True, slots=True)
class SetFlag:
    flag: Flag
    user_id: str
    value: bool


@dataclass(frozen=True, slots=True)
class Sweep:
    """Delete messages expired at ``now`` and the log of sessions ended before ``ended_before``
    (and finished webhooks past their own retention, ``webhooks.outbox``)."""

    now: datetime
    ended_before: datetime


Write = PutSession | PutMessage | PutOrder | PutOffer | FinishOrder | ExpireChat | SetFlag | Sweep

# --- what goes out ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notice:
    """An ephemeral frame (no seq) for every socket of each recipient, encoded once."""

    recipients: tuple[Recipient, ...]
    frame: Outbound
    answers_requester: bool = False
    """The requester receives this frame as its answer: its own socket is skipped here."""


@dataclass(frozen=True, slots=True)
class AnsweredByEvent:
    """The command is answered by the last event it logged (which carries its request_id);
    the requester's socket gets the events ahead of the broker's copy."""


ANSWERED_BY_EVENT = AnsweredByEvent()


@dataclass(frozen=True, slots=True)
class AnswerFrame:
    """The command is answered by a frame outside the log, for the requester alone."""

    frame: Outbound


@dataclass(frozen=True, slots=True)
class Result:
    """The value a REST call answers with."""

    value: object


Reply = AnsweredByEvent | AnswerFrame | Result | None
"""None: the command has no direct answer (a receipt, a location fix)."""

# --- what the metrics count (after the COMMIT) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class FixDropped:
    verdict: str


@dataclass(frozen=True, slots=True)
class DistanceSent:
    trigger: Literal["move", "tick"]
    sessions: int = 1


@dataclass(frozen=True, slots=True)
class MessageDelivered:
    created_at: datetime
    delivered_at: datetime


@dataclass(frozen=True, slots=True)
class SessionEnded:
    outcome: str
    started_at: datetime
    ended_at: datetime


@dataclass(frozen=True, slots=True)
class OfferOutcome:
    outcome: str
    count: int = 1


Observation = FixDropped | DistanceSent | MessageDelivered | SessionEnded | OfferOutcome


@dataclass(frozen=True, slots=True)
class Decision:
    out: tuple[LoggedEvent | Notice, ...] = ()
    """Events to log and notices to send, in the order they are published."""
    writes: tuple[Write, ...] = ()
    reply: Reply = None
    observations: tuple[Observation, ...] = ()

    @property
    def events(self) -> tuple[LoggedEvent, ...]:
        return tuple(item for item in self.out if isinstance(item, LoggedEvent))
