"""Internal REST API for work orders (service tokens), PROTOCOL 7."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from worksession.orders import lookup
from worksession.orders.schemas import (
    MAX_WORK_ID,
    WorkOrderCreate,
    WorkOrderCreated,
    WorkOrderView,
)
from worksession.pipeline.commands import CreateWorkOrder
from worksession.rest_auth import AUTH_RESPONSES, BODY_RESPONSES, ErrorDetail, ServiceCaller
from worksession.state import AppState, get_state

router = APIRouter(prefix="/internal/v1", tags=["internal"], responses=AUTH_RESPONSES)

# Out of the key's range is a 422 here, never a database error (a 500).
WorkIdPath = Annotated[int, Path(ge=1, le=MAX_WORK_ID, description="The work order's id.")]
State = Annotated[AppState, Depends(get_state)]


@router.post(
    "/work-orders",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkOrderCreated,
    summary="Create a work order and offer it to providers",
    description="Offered only to the providers whose active status is not off (never set "
    "counts as on) and who have no live session; `offered_to` and `skipped` say who got it.",
    responses={
        **BODY_RESPONSES,
        status.HTTP_409_CONFLICT: {
            "model": ErrorDetail,
            "description": "Nothing stored: `seeker_busy` (the seeker has a live session) or "
            "`no_provider_available` (every provider is busy or inactive)",
        },
    },
)
async def create_work_order(
    body: WorkOrderCreate, _caller: ServiceCaller, state: State
) -> WorkOrderCreated:
    location = body.seeker_location
    command = CreateWorkOrder(
        seeker_id=body.seeker_id,
        provider_ids=tuple(body.provider_ids),
        details=body.details,
        seeker_location=None if location is None else (location.lat, location.lng),
    )
    outcome = await state.pipeline.submit(command)
    return outcome.result(WorkOrderCreated)


@router.get(
    "/work-orders/{work_id}",
    response_model=WorkOrderView,
    summary="A work order with its offers and session",
    responses={
        status.HTTP_404_NOT_FOUND: {"model": ErrorDetail, "description": "No such work order"}
    },
)
async def get_work_order(
    work_id: WorkIdPath, _caller: ServiceCaller, state: State
) -> WorkOrderView:
    async with state.db.transaction() as db:
        return await lookup.get_work_order(db, work_id)
