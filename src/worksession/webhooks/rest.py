"""The internal API of the webhook outbox (service tokens): what is queued, and sending a
dead webhook again."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from worksession.kit.clock import utcnow
from worksession.rest_auth import AUTH_RESPONSES, ErrorDetail, ServiceCaller
from worksession.state import AppState, get_state
from worksession.webhooks import deliveries
from worksession.webhooks.schemas import DeliveryPage, DeliveryView

router = APIRouter(prefix="/internal/v1/webhooks", tags=["internal"], responses=AUTH_RESPONSES)

State = Annotated[AppState, Depends(get_state)]
MAX_LIMIT = 500

NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    status.HTTP_404_NOT_FOUND: {"model": ErrorDetail, "description": "No such webhook delivery"},
    status.HTTP_409_CONFLICT: {
        "model": ErrorDetail,
        "description": "The delivery is not dead (pending ones are being retried already)",
    },
}


@router.get(
    "/deliveries",
    response_model=DeliveryPage,
    summary="The webhook queue: pending deliveries (by when due) or dead ones (newest first)",
)
async def list_deliveries(
    _caller: ServiceCaller,
    state: State,
    delivery_status: Annotated[
        Literal["pending", "dead"], Query(alias="status", description="Which deliveries.")
    ] = "pending",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many.")] = 100,
) -> DeliveryPage:
    async with state.db.transaction() as db:
        return DeliveryPage(deliveries=await deliveries.listing(db, delivery_status, limit))


@router.post(
    "/deliveries/{delivery_id}/retry",
    response_model=DeliveryView,
    summary="Send a dead webhook again, now, with another 24 hours of retries",
    responses=NOT_FOUND,
)
async def retry_delivery(
    delivery_id: Annotated[uuid.UUID, Path(description="The webhook's id.")],
    _caller: ServiceCaller,
    state: State,
) -> DeliveryView:
    async with state.db.transaction() as db:
        view, retried = await deliveries.retry_dead(db, delivery_id, utcnow())
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such webhook delivery")
    if not retried:
        raise HTTPException(status.HTTP_409_CONFLICT, f"The delivery is {view.status}, not dead")
    if state.webhooks is not None:
        state.webhooks.wake()
    return view
