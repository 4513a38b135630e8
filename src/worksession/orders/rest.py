"""Internal REST API for work orders (service tokens), PROTOCOL 7."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from worksession.errors import WorkNotFound
from worksession.orders import service
from worksession.orders.schemas import MAX_WORK_ID, WorkOrderCreate, WorkOrderView
from worksession.outbox import Outbox
from worksession.rest_auth import AUTH_RESPONSES, ErrorDetail, ServiceCaller
from worksession.state import AppState, get_state

logger = logging.getLogger(__name__)


class NoEchoRoute(APIRoute):
    """Validation errors without the offending ``input``.

    FastAPI's default 422 echoes what the caller sent: a NaN there cannot be encoded as JSON
    (a 500 instead of a 422), and a 4 KiB ``details`` would come straight back, possibly
    into someone's logs. The message, location and type of each error say enough.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def without_echo(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = [
                    {k: v for k, v in e.items() if k not in {"input", "ctx", "url"}}
                    for e in exc.errors()
                ]
                raise RequestValidationError(errors) from None

        return without_echo


router = APIRouter(
    prefix="/internal/v1", tags=["internal"], responses=AUTH_RESPONSES, route_class=NoEchoRoute
)

# Out of the key's range is a 422 here, never a database error (a 500).
WorkIdPath = Annotated[int, Path(ge=1, le=MAX_WORK_ID, description="The work order's id.")]
State = Annotated[AppState, Depends(get_state)]


async def _publish(state: AppState, outbox: Outbox) -> None:
    # After COMMIT: the change stands whatever happens here, and providers who miss the
    # work_request still find it in `connected.pending_work`.
    try:
        await state.broker.publish(outbox.messages)
    except Exception as exc:
        logger.warning("publish after commit failed: %s", type(exc).__name__)


@router.post(
    "/work-orders",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkOrderView,
    summary="Create a work order and offer it to providers",
)
async def create_work_order(
    body: WorkOrderCreate, _caller: ServiceCaller, state: State
) -> WorkOrderView:
    outbox = Outbox()
    async with state.db.transaction() as db:
        view = await service.create_work_order(
            db, outbox, order=body, offer_ttl_s=state.settings.offer_ttl_s
        )
    await _publish(state, outbox)
    return view


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
    try:
        async with state.db.transaction() as db:
            return await service.get_work_order(db, work_id)
    except WorkNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "work order not found") from None
