"""Work order models of the internal REST API.

The REST router validates requests with these models and the service returns them, so the
OpenAPI document is generated from exactly what the code accepts and answers.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict

from worksession.eventlog.outbox import dumps
from worksession.kit.clock import UtcTimestamp
from worksession.models.base import USER_ID_LENGTH, USER_ID_PATTERN

MAX_PROVIDERS: Final = 50
MAX_DETAILS_BYTES: Final = 4096
MAX_WORK_ID: Final = 2**31 - 1
"""The largest id the work_orders key holds (int4 on PostgreSQL); no order has a larger one."""

UserIdField = Annotated[
    str, Strict(), Field(min_length=1, max_length=USER_ID_LENGTH, pattern=USER_ID_PATTERN)
]
# Strict: a JSON number (an integer is fine), never a string, a boolean, NaN or infinity.
Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]


def _unique(ids: list[str]) -> list[str]:
    # Refused rather than silently collapsed: a duplicate is a bug in the calling service.
    if len(set(ids)) != len(ids):
        raise ValueError("provider_ids must not repeat an id")
    return ids


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _small_json(details: dict[str, Any]) -> dict[str, Any]:
    if _has_nul(details):  # jsonb refuses \u0000: a 422 here, not a database error
        raise ValueError("details must not contain NUL characters")
    try:
        encoded = dumps(details).encode()
    except ValueError:  # NaN or infinity: not JSON, and PostgreSQL's jsonb refuses it
        raise ValueError("details must be plain JSON (no NaN or Infinity)") from None
    if len(encoded) > MAX_DETAILS_BYTES:
        raise ValueError(f"details must encode to at most {MAX_DETAILS_BYTES} bytes of JSON")
    return details


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: Annotated[Finite, Field(ge=-90, le=90, examples=[12.9716])]
    lng: Annotated[Finite, Field(ge=-180, le=180, examples=[77.5946])]


class WorkOrderCreate(BaseModel):
    """A seeker's request, offered at once to every listed provider; first accept wins."""

    model_config = ConfigDict(extra="forbid")

    seeker_id: UserIdField
    provider_ids: Annotated[
        list[UserIdField],
        Field(min_length=1, max_length=MAX_PROVIDERS),
        AfterValidator(_unique),
    ]
    details: Annotated[
        dict[str, Any],
        AfterValidator(_small_json),
        Field(
            default_factory=dict,
            description=f"Free-form JSON sent to the providers; at most {MAX_DETAILS_BYTES} "
            "bytes once compactly encoded.",
        ),
    ]
    seeker_location: Location | None = None


class OfferView(BaseModel):
    provider_id: str
    status: str = Field(description="offered, accepted, declined, withdrawn or expired")
    responded_at: UtcTimestamp | None


class WorkOrderView(BaseModel):
    work_id: int
    seeker_id: str
    status: str = Field(
        description="pending, accepted, rejected, expired, cancelled, completed or (1.1) withdrawn"
    )
    details: dict[str, Any] = Field(
        description="As created; {} once erased, 24 h after the order ended (PROTOCOL 5)."
    )
    seeker_location: Location | None = Field(description="As created; null once erased.")
    created_at: UtcTimestamp
    expires_at: UtcTimestamp = Field(description="When the offers lapse if nobody accepts.")
    offers: list[OfferView]
    session_id: uuid.UUID | None = Field(description="The session created by the accept.")


class SkippedProvider(BaseModel):
    provider_id: str
    reason: Literal["inactive", "busy"] = Field(
        description="busy: in a live session; inactive: their active status is off."
    )


class WorkOrderCreated(WorkOrderView):
    """The answer to a creation: the order, and to whom it went (PROTOCOL 4)."""

    offered_to: list[str] = Field(description="The providers offered the order, as listed.")
    skipped: list[SkippedProvider] = Field(
        description="The providers it was not offered to, and why; nothing about them is "
        "stored, so the order read back does not list them."
    )


OrderStatusName = Literal[
    "pending", "accepted", "rejected", "expired", "withdrawn", "cancelled", "completed"
]


class MyWorkOrder(BaseModel):
    """One of the caller's work orders (*1.1*): a seeker's own, or one offered to a
    provider."""

    work_id: int
    status: OrderStatusName = Field(
        description="The order's status. cancelled and completed: its session ended so. "
        "A pending order past `expires_at` is shown expired (the expiry job marks it within "
        "a second or so)."
    )
    created_at: UtcTimestamp
    expires_at: UtcTimestamp = Field(description="When the offers lapse if nobody accepts.")
    session_id: uuid.UUID | None = Field(
        description="The session the accept created; null before (for a provider: null "
        "unless it is their own session)."
    )


class MyWorkOrderPage(BaseModel):
    work_orders: list[MyWorkOrder] = Field(description="Newest first")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page. "
        "Opaque: do not build or alter it."
    )
