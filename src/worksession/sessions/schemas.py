"""Shapes the session service hands out: the location rules it applies and the snapshot a
reconnecting client gets (PROTOCOL 6)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from worksession.config import Settings
from worksession.kit.clock import UtcTimestamp
from worksession.models.base import USER_ID_LENGTH, USER_ID_PATTERN

LiveState = Literal["waiting", "active"]


@dataclass(frozen=True, slots=True)
class LocationRules:
    """The thresholds of PROTOCOL 5 "Location and distance", all settings."""

    move_threshold_m: float
    nearby_m: float
    arrived_m: float
    max_accuracy_m: float
    max_speed_kmh: float

    @classmethod
    def from_settings(cls, settings: Settings) -> LocationRules:
        return cls(
            move_threshold_m=settings.move_threshold_m,
            nearby_m=settings.nearby_m,
            arrived_m=settings.arrived_m,
            max_accuracy_m=settings.max_accuracy_m,
            max_speed_kmh=settings.max_speed_kmh,
        )


class SnapshotMediums(BaseModel):
    model_config = ConfigDict(frozen=True)

    seeker: dict[str, str] | None = Field(
        description="What the seeker selected (bare 10-digit numbers), null before the first "
        "selection and once erased (with the chat, 24 h after the session ended)"
    )
    provider: dict[str, str] | None = Field(
        description="What the provider shared, null before the first share and once erased"
    )


class SessionSnapshot(BaseModel):
    """The caller's live session as ``connected.session`` and ``GET /v1/me/session`` show it."""

    model_config = ConfigDict(frozen=True)

    session_id: str = Field(description="The session's UUID")
    work_id: int = Field(description="The work order the session was created from")
    connection_state: LiveState
    your_role: Literal["seeker", "provider"]
    chat_room_id: str | None = Field(description="UUID once the chat is started, else null")
    mediums: SnapshotMediums
    distance_meters: float | None = Field(
        description="Metres between the two latest positions, to 0.1 m; null until both known"
    )
    distance_formatted: str | None = Field(description='For example "1.2 km away"')
    last_seq: int = Field(
        ge=0, description="The seq of the session's latest logged event; resume from here"
    )
    peer_online: bool = Field(
        description="1.1: whether the other participant has a socket open (on any worker) "
        "right now; `peer_presence` frames tell of later changes"
    )


# --- internal REST API (PROTOCOL 7) --------------------------------------------------

SessionStateName = Literal["waiting", "active", "cancelled", "completed"]

USER_ID_MAX_CHARS: Final = USER_ID_LENGTH
"""For the REST routers' user id parameters: they may not import the models themselves."""
USER_ID_CHARS: Final = USER_ID_PATTERN
"""The pattern of the same parameters: no control characters."""


class Position(BaseModel):
    model_config = ConfigDict(frozen=True)

    lat: float
    lng: float
    updated_at: UtcTimestamp | None = Field(description="When the server accepted this fix")
    recorded_at: UtcTimestamp | None = Field(
        description="The device's own time of the fix, when it sent one"
    )


class SessionPositions(BaseModel):
    model_config = ConfigDict(frozen=True)

    seeker: Position | None = Field(
        description="The seeker's latest kept fix, null before one and once erased (with the "
        "chat, 24 h after the session ended)"
    )
    provider: Position | None = Field(
        description="The provider's latest kept fix, null before one and once erased"
    )


class SessionDetail(BaseModel):
    """The whole session as another back-end service sees it, participants included."""

    model_config = ConfigDict(frozen=True)

    session_id: uuid.UUID
    work_id: int = Field(description="The work order the session was created from")
    seeker_id: str
    provider_id: str
    state: SessionStateName = Field(
        description="The `connection_state` of the WebSocket frames; waiting and active are live"
    )
    chat_room_id: uuid.UUID | None = Field(description="Set once the chat is started")
    mediums: SnapshotMediums
    positions: SessionPositions
    distance_meters: float | None = Field(
        description="Metres between the two latest positions, to 0.1 m; null until both known"
    )
    distance_formatted: str | None = Field(description='For example "1.2 km away"')
    nearby_at: UtcTimestamp | None = Field(description="When provider_nearby was sent")
    arrived_at: UtcTimestamp | None = Field(description="When provider_arrived was sent")
    chat_started_at: UtcTimestamp | None
    mediums_shared_at: UtcTimestamp | None = Field(
        description="When the seeker last selected mediums"
    )
    cancelled_by: Literal["seeker", "provider", "system"] | None = Field(
        description="Who cancelled; system is the internal API"
    )
    cancelled_at: UtcTimestamp | None
    completed_at: UtcTimestamp | None
    created_at: UtcTimestamp
    updated_at: UtcTimestamp
    last_seq: int = Field(ge=0, description="The seq of the session's latest logged event")


class SessionPage(BaseModel):
    sessions: list[SessionDetail] = Field(description="Newest first")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page. "
        "Opaque: do not build or alter it."
    )
