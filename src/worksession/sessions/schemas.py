"""Shapes the session service hands out: the location rules it applies and the snapshot a
reconnecting client gets (PROTOCOL 6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worksession.config import Settings

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
        "selection"
    )
    provider: dict[str, str] | None = Field(
        description="What the provider shared, null before the first share"
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

    def to_frame_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict, key order as declared."""
        return self.model_dump(mode="json")
