"""The states of sessions, work orders, offers and chat messages.

Which moves between them are allowed is decided where each move is made, once: a session
ends only while live (``sessions.lifecycle``), a seeker's first medium selection makes it
active (``sessions.mediums``), an order leaves ``pending`` and an offer leaves ``offered``
only through the commands of ``orders.offers``, and a message's status only steps forward
(``chat.receipts``).
"""

from __future__ import annotations

from enum import StrEnum


class SessionState(StrEnum):
    WAITING = "waiting"
    ACTIVE = "active"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


LIVE_STATES: frozenset[SessionState] = frozenset({SessionState.WAITING, SessionState.ACTIVE})


def is_live(state: SessionState) -> bool:
    """``waiting`` or ``active``: the session still counts against one-live-session-per-user."""
    return state in LIVE_STATES


class WorkOrderStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    WITHDRAWN = "withdrawn"
    """The seeker took the order back while it was pending (``cancel_work``, *1.1*)."""


class OfferStatus(StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


class MessageStatus(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
