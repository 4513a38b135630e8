"""The rows a batch loads, decides on and writes back, as plain immutable values.

Field names are the column names. A deciding function never changes a row: it returns a
new one (:func:`evolve`) inside a write, and the pipeline both keeps it for the rest of the
batch and stores what changed. ``pk`` is the primary key, None for a row the batch creates
until it has been inserted.

The rows are frozen dataclasses without ``__slots__``, on purpose: :func:`evolve` and
:func:`from_record` fill an instance's ``__dict__`` in one step, where the generated
``__init__`` of a frozen class sets each of a session's 35 fields through
``object.__setattr__`` (``dataclasses.replace`` was a fifth of a location fix's CPU).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from worksession import geo
from worksession.config import Settings
from worksession.sessions.schemas import LocationRules
from worksession.sessions.states import LIVE_STATES

R = TypeVar("R")
_LIVE = frozenset(state.value for state in LIVE_STATES)


def evolve(row: R, **changes: Any) -> R:
    """``row`` with ``changes``, a new row (``dataclasses.replace`` for these rows, cheaper)."""
    unknown = changes.keys() - row.__dataclass_fields__.keys()  # type: ignore[attr-defined]
    if unknown:
        raise TypeError(f"{type(row).__name__} has no field {sorted(unknown)}")
    new: R = object.__new__(type(row))
    new.__dict__.update(row.__dict__)
    new.__dict__.update(changes)
    return new


def from_record(kind: type[R], values: Any) -> R:
    """A row of ``kind`` from ``values`` in field order (a database record)."""
    new: R = object.__new__(kind)
    new.__dict__.update(zip(kind.__dataclass_fields__, values, strict=True))  # type: ignore[attr-defined]
    return new


@dataclass(frozen=True)
class SessionRow:
    pk: int | None
    session_id: uuid.UUID
    work_order_id: int
    seeker_id: str
    provider_id: str
    connection_state: str
    last_seq: int
    created_at: datetime
    updated_at: datetime
    seeker_latitude: float | None = None
    seeker_longitude: float | None = None
    seeker_last_location_update: datetime | None = None
    seeker_fix_recorded_at: datetime | None = None
    provider_latitude: float | None = None
    provider_longitude: float | None = None
    provider_last_location_update: datetime | None = None
    provider_fix_recorded_at: datetime | None = None
    current_distance_meters: float | None = None
    last_distance_update: datetime | None = None
    distance_seeker_latitude: float | None = None
    distance_seeker_longitude: float | None = None
    distance_provider_latitude: float | None = None
    distance_provider_longitude: float | None = None
    nearby_at: datetime | None = None
    arrived_at: datetime | None = None
    seeker_selected_mediums: dict[str, Any] | None = None
    provider_selected_mediums: dict[str, Any] | None = None
    mediums_shared_at: datetime | None = None
    chat_room_id: uuid.UUID | None = None
    chat_started_at: datetime | None = None
    cancelled_by_id: str | None = None
    cancelled_by: str | None = None
    cancelled_at: datetime | None = None
    completed_at: datetime | None = None
    message_count: int = 0

    def participant(self, role: str) -> str:
        return self.seeker_id if role == "seeker" else self.provider_id

    @property
    def is_live(self) -> bool:
        return self.connection_state in _LIVE

    @property
    def seeker_position(self) -> geo.Position | None:
        return _position(self.seeker_latitude, self.seeker_longitude)

    @property
    def provider_position(self) -> geo.Position | None:
        return _position(self.provider_latitude, self.provider_longitude)

    def position_of(self, role: str) -> geo.Position | None:
        return self.seeker_position if role == "seeker" else self.provider_position

    @property
    def distance_m(self) -> float | None:
        """Between the two latest positions, or None until both are known."""
        seeker, provider = self.seeker_position, self.provider_position
        if seeker is None or provider is None:
            return None
        return geo.distance_between(seeker, provider)


SESSION_COLUMNS: tuple[str, ...] = tuple(
    name for name in SessionRow.__dataclass_fields__ if name != "pk"
)
SESSION_MUTABLE: tuple[str, ...] = tuple(
    name
    for name in SESSION_COLUMNS
    if name not in {"session_id", "work_order_id", "seeker_id", "provider_id", "created_at"}
)
"""The columns a batch may change; the others are fixed when the session is created."""


def column_value(row: Any, column: str) -> Any:
    """The value of ``column`` in a row of this module: a row's ``id`` is its ``pk`` where it
    has one (a work order's ``id`` is its public work id)."""
    return getattr(row, "pk" if column == "id" and hasattr(row, "pk") else column)


def _position(lat: float | None, lng: float | None) -> geo.Position | None:
    return None if lat is None or lng is None else geo.Position(lat=lat, lng=lng)


@dataclass(frozen=True)
class MessageRow:
    pk: int | None
    message_id: uuid.UUID
    session_id: uuid.UUID
    """The session's UUID (the column holds its primary key)."""
    sender_id: str
    sender_type: str
    message_text: str
    client_msg_id: str | None
    seq: int | None
    delivery_status: str
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class OrderRow:
    id: int
    seeker_id: str
    status: str
    details: dict[str, Any]
    seeker_latitude: float | None
    seeker_longitude: float | None
    offer_expires_at: datetime
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class OfferRow:
    work_order_id: int
    provider_id: str
    status: str
    created_at: datetime
    updated_at: datetime
    responded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings the rules read: thresholds and durations, fixed for a process."""

    location: LocationRules
    retention: timedelta
    """How long chat and history outlive the end of a session."""
    offer_ttl: timedelta
    max_messages_per_session: int = 5000
    abandon_after: timedelta = timedelta(hours=12)
    """How long a live session may go untouched by both participants (``updated_at``)."""
    webhooks: bool = False
    """Whether batches write webhooks to the outbox (``WORKSESSION_WEBHOOK_URL`` is set)."""
    webhook_chat_window: timedelta = timedelta(seconds=30)
    """At most one chat webhook per recipient and session per this window (docs/webhooks.md):
    the batch writes its webhooks first and reads the window after. A claim in flight on
    the open row makes the batch's insert wait, then insert a new row and see the claim in
    the window; if the batch's merge locks the row first, the claim skips it."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            location=LocationRules.from_settings(settings),
            retention=timedelta(hours=settings.message_retention_hours),
            offer_ttl=timedelta(seconds=settings.offer_ttl_s),
            max_messages_per_session=settings.max_messages_per_session,
            abandon_after=timedelta(seconds=settings.abandon_after_s),
            webhooks=bool(settings.webhook_url),
            webhook_chat_window=timedelta(seconds=settings.webhook_chat_coalesce_s),
        )
