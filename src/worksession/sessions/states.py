"""The states of sessions, work orders, offers and chat messages, and the moves between them.

The tables are the single statement of what the contract allows. The database enforces
them where it matters (conditional UPDATEs such as ``WHERE status = 'pending'``); the
session service consults ``can_transition`` and ``is_live`` directly, and the unit tests
hold the SQL and these tables to the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class SessionState(StrEnum):
    WAITING = "waiting"
    ACTIVE = "active"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


LIVE_STATES: frozenset[SessionState] = frozenset({SessionState.WAITING, SessionState.ACTIVE})
ENDED_STATES: frozenset[SessionState] = frozenset({SessionState.CANCELLED, SessionState.COMPLETED})

# The provider may complete a session that is still `waiting`: a seeker who never picked a
# medium may still have had the job done (they met in person or talked in the chat), and
# refusing would leave the provider stuck in a live session with no way out but cancelling.
ALLOWED_TRANSITIONS: Mapping[SessionState, frozenset[SessionState]] = MappingProxyType(
    {
        SessionState.WAITING: frozenset(
            {SessionState.ACTIVE, SessionState.CANCELLED, SessionState.COMPLETED}
        ),
        SessionState.ACTIVE: frozenset({SessionState.CANCELLED, SessionState.COMPLETED}),
        SessionState.CANCELLED: frozenset(),
        SessionState.COMPLETED: frozenset(),
    }
)


def can_transition(current: SessionState, new: SessionState) -> bool:
    """Whether a session may move from ``current`` to ``new`` (never to itself)."""
    return new in ALLOWED_TRANSITIONS[current]


def is_live(state: SessionState) -> bool:
    """``waiting`` or ``active``: the session still counts against one-live-session-per-user."""
    return state in LIVE_STATES


def is_final(state: SessionState) -> bool:
    """No transition leaves this state."""
    return not ALLOWED_TRANSITIONS[state]


class WorkOrderStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


ALLOWED_ORDER_TRANSITIONS: Mapping[WorkOrderStatus, frozenset[WorkOrderStatus]] = MappingProxyType(
    {
        WorkOrderStatus.PENDING: frozenset(
            {
                WorkOrderStatus.ACCEPTED,
                WorkOrderStatus.REJECTED,
                WorkOrderStatus.EXPIRED,
                WorkOrderStatus.CANCELLED,
            }
        ),
        WorkOrderStatus.ACCEPTED: frozenset({WorkOrderStatus.CANCELLED, WorkOrderStatus.COMPLETED}),
        WorkOrderStatus.REJECTED: frozenset(),
        WorkOrderStatus.EXPIRED: frozenset(),
        WorkOrderStatus.CANCELLED: frozenset(),
        WorkOrderStatus.COMPLETED: frozenset(),
    }
)


def can_transition_order(current: WorkOrderStatus, new: WorkOrderStatus) -> bool:
    """Whether a work order may move from ``current`` to ``new``."""
    return new in ALLOWED_ORDER_TRANSITIONS[current]


class OfferStatus(StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


ALLOWED_OFFER_TRANSITIONS: Mapping[OfferStatus, frozenset[OfferStatus]] = MappingProxyType(
    {
        OfferStatus.OFFERED: frozenset(
            {
                OfferStatus.ACCEPTED,
                OfferStatus.DECLINED,
                OfferStatus.WITHDRAWN,
                OfferStatus.EXPIRED,
            }
        ),
        OfferStatus.ACCEPTED: frozenset(),
        OfferStatus.DECLINED: frozenset(),
        OfferStatus.WITHDRAWN: frozenset(),
        OfferStatus.EXPIRED: frozenset(),
    }
)


def can_transition_offer(current: OfferStatus, new: OfferStatus) -> bool:
    """Whether an offer may move from ``current`` to ``new``; only ``offered`` ever moves."""
    return new in ALLOWED_OFFER_TRANSITIONS[current]


class MessageStatus(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"


# The forward-only `UPDATE ... WHERE status < :new` must compare these ranks, not the names:
# alphabetically "delivered" < "read" < "sent", which would let a late `sent` overwrite `read`.
MESSAGE_STATUS_RANK: Mapping[MessageStatus, int] = MappingProxyType(
    {MessageStatus.SENT: 0, MessageStatus.DELIVERED: 1, MessageStatus.READ: 2}
)


def advances(current: MessageStatus, new: MessageStatus) -> bool:
    """True when ``new`` is strictly further along than ``current``."""
    return MESSAGE_STATUS_RANK[new] > MESSAGE_STATUS_RANK[current]
