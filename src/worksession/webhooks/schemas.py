"""What the internal API shows of the webhook outbox."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from worksession.kit.clock import UtcTimestamp

DeliveryStatus = Literal["pending", "delivered", "skipped", "dead"]


class DeliveryView(BaseModel):
    id: uuid.UUID = Field(description="The webhook's id, as in its body (stable across retries).")
    type: str
    user_id: str
    user_type: Literal["seeker", "provider"]
    work_id: int | None
    session_id: uuid.UUID | None
    seq: int | None
    occurred_at: UtcTimestamp
    status: DeliveryStatus = Field(
        description="pending (waiting, being retried, or held 45 s because the user had a "
        "socket open when it was due), delivered, skipped (the user had a socket open when it "
        "was due and again 45 s later), dead (failed until its give-up time: 24 hours after "
        "the event, or a work_request's offer expiry; an operator can send it again)"
    )
    attempts: int
    next_attempt_at: UtcTimestamp
    last_error: str | None = Field(description="Why the latest attempt failed, if it did.")
    created_at: UtcTimestamp
    delivered_at: UtcTimestamp | None


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryView]
