"""REST for work orders, PROTOCOL 7: the internal API (service tokens) creates, reads and
withdraws them; (*1.1*) a participant lists their own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from worksession.orders import lookup
from worksession.orders.schemas import (
    MAX_WORK_ID,
    MyWorkOrderPage,
    WorkOrderCreate,
    WorkOrderCreated,
    WorkOrderView,
)
from worksession.pipeline.commands import CreateWorkOrder, WithdrawWork
from worksession.rest_auth import (
    AUTH_RESPONSES,
    BODY_RESPONSES,
    ErrorDetail,
    ParticipantCaller,
    ServiceCaller,
)
from worksession.sessions.rest import BeforeQuery, decoded_cursor, participant_role
from worksession.state import AppState, get_state

router = APIRouter(prefix="/internal/v1", tags=["internal"], responses=AUTH_RESPONSES)
participant_router = APIRouter(prefix="/v1", tags=["participant"], responses=AUTH_RESPONSES)

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


@router.post(
    "/work-orders/{work_id}/cancel",
    response_model=WorkOrderView,
    summary="Withdraw a pending work order",
    description="1.1: the same as the seeker's `cancel_work` frame, for any order. The order "
    "becomes `withdrawn`, its open offers `withdrawn`; every socket of the seeker gets "
    "`work_withdrawn`, every provider still offered `work_unavailable`.",
    responses={
        status.HTTP_404_NOT_FOUND: {"model": ErrorDetail, "description": "No such work order"},
        status.HTTP_409_CONFLICT: {
            "model": ErrorDetail,
            "description": "`work_unavailable`: the order is no longer pending (accepted, "
            "rejected, expired or already withdrawn); nothing changed",
        },
    },
)
async def cancel_work_order(
    work_id: WorkIdPath, _caller: ServiceCaller, state: State
) -> WorkOrderView:
    await state.pipeline.submit(WithdrawWork(work_id, None))
    async with state.db.transaction() as db:
        return await lookup.get_work_order(db, work_id)


@participant_router.get(
    "/me/work-orders",
    response_model=MyWorkOrderPage,
    summary="The caller's work orders, newest first",
    description="1.1: a seeker's own orders, or the orders offered to a provider, with how "
    "each ended; what a seeker who was offline when it happened reads to learn it.",
)
async def my_work_orders(
    caller: ParticipantCaller,
    state: State,
    limit: Annotated[
        int, Query(ge=1, le=lookup.MAX_PAGE_SIZE, description="Orders per page.")
    ] = lookup.DEFAULT_PAGE_SIZE,
    cursor: BeforeQuery = None,
) -> MyWorkOrderPage:
    before_id = decoded_cursor(lookup.decode_order_cursor, cursor, "cursor")
    async with state.db.transaction() as db:
        return await lookup.my_work_orders(
            db,
            user_id=caller.sub,
            role=participant_role(caller),
            before_id=before_id,
            limit=limit,
        )
