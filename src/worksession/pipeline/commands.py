"""Every state-changing input, as a typed command.

The transport builds these (the gateway from a frame, a REST route from a request, a job
from the clock) and hands them to the :class:`~worksession.pipeline.runner.Pipeline`.
A command is plain data: who asks, what for, and the fresh ids a new row would take.
Those ids are drawn here, when the command is made, so that deciding it stays a pure
function of the command, the loaded rows and the batch's clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from worksession.geo import Fix

Role = Literal["seeker", "provider"]
ReceiptStatus = Literal["delivered", "read"]


@dataclass(frozen=True, slots=True)
class Actor:
    """A participant acting in one role (a user id may be a seeker in one session and a
    provider in another)."""

    user_id: str
    role: Role


# --- work orders ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateWorkOrder:
    seeker_id: str
    provider_ids: tuple[str, ...]
    details: dict[str, Any]
    seeker_location: tuple[float, float] | None = None
    work_id: int = 0
    """Left at 0 by the caller: the pipeline takes the next id of the order sequence for it
    before deciding, since every notice about the order names it."""


@dataclass(frozen=True, slots=True)
class AcceptWork:
    work_id: int
    provider_id: str
    session_id: uuid.UUID = field(default_factory=uuid.uuid4)
    """The id of the session this accept would create."""


@dataclass(frozen=True, slots=True)
class DeclineWork:
    work_id: int
    provider_id: str


@dataclass(frozen=True, slots=True)
class WithdrawWork:
    """The seeker takes back a pending order (``cancel_work``, *1.1*)."""

    work_id: int
    seeker_id: str | None
    """None: the internal API, for any order."""


@dataclass(frozen=True, slots=True)
class ExpireOffers:
    """Expire every pending order past its deadline (the leader's job, every second)."""


# --- the live session -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SelectMediums:
    session_id: uuid.UUID
    seeker_id: str
    mediums: dict[str, str]
    """Already normalised: bare 10-digit numbers."""


@dataclass(frozen=True, slots=True)
class ShareMediums:
    session_id: uuid.UUID
    provider_id: str
    mediums: dict[str, str]


@dataclass(frozen=True, slots=True)
class ReportLocation:
    session_id: uuid.UUID
    actor: Actor
    fix: Fix


@dataclass(frozen=True, slots=True)
class CancelSession:
    session_id: uuid.UUID
    by: Actor | None
    """None: the internal API (``cancelled_by: "system"``), for any session."""


@dataclass(frozen=True, slots=True)
class CancelAbandoned:
    """Cancel, as the system, those of these live sessions that nobody has touched for the
    policy's ``abandon_after`` (the leader's job). The ids are candidates read before the
    batch; each is judged again on its locked row, so a frame that just arrived wins."""

    session_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True, slots=True)
class TouchSession:
    """A participant's frame for the session that writes nothing of its own (typing,
    ``resume``): it only moves the session's ``updated_at``, the clock of abandonment. The
    gateway sends it at most once per ``touch_interval_s`` for each socket and session."""

    session_id: uuid.UUID
    actor: Actor


@dataclass(frozen=True, slots=True)
class CompleteSession:
    session_id: uuid.UUID
    provider_id: str | None
    """None: the internal API, for any session."""


# --- chat -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartChat:
    session_id: uuid.UUID
    actor: Actor
    chat_room_id: uuid.UUID = field(default_factory=uuid.uuid4)
    """The room this command opens if the session has none yet."""


@dataclass(frozen=True, slots=True)
class SendMessage:
    session_id: uuid.UUID
    actor: Actor
    text: str
    """Already validated (1 to 2,000 characters, the contract's character rules)."""
    client_msg_id: str | None = None
    message_id: uuid.UUID = field(default_factory=uuid.uuid4)
    chat_room_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True, slots=True)
class AcknowledgeMessage:
    message_id: uuid.UUID
    actor: Actor
    status: ReceiptStatus


# --- availability and retention -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetAvailability:
    """The internal API's flags; None keeps a flag as it is."""

    user_id: str
    provider_active: bool | None = None
    seeker_searching: bool | None = None


@dataclass(frozen=True, slots=True)
class SweepExpired:
    """Delete expired chat and the event log of sessions ended past retention (hourly)."""


Command = (
    CreateWorkOrder
    | AcceptWork
    | DeclineWork
    | WithdrawWork
    | ExpireOffers
    | SelectMediums
    | ShareMediums
    | ReportLocation
    | CancelSession
    | CancelAbandoned
    | TouchSession
    | CompleteSession
    | StartChat
    | SendMessage
    | AcknowledgeMessage
    | SetAvailability
    | SweepExpired
)
