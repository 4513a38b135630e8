"""What the service tells about work orders without changing them: the internal API's view
of an order, a provider's open offers (``connected.pending_work``), a seeker's pending
orders (``connected.open_orders``) and a participant's orders (``GET /v1/me/work-orders``)."""

from __future__ import annotations

from datetime import datetime
from typing import Final, cast

from sqlalchemy.ext.asyncio import AsyncSession

from worksession.errors import WorkNotFound
from worksession.kit import cursor
from worksession.kit.clock import utcnow
from worksession.orders import offer_repository, repository
from worksession.orders.offers import open_order, order_view, pending_work
from worksession.orders.schemas import (
    MAX_WORK_ID,
    MyWorkOrder,
    MyWorkOrderPage,
    OrderStatusName,
    WorkOrderView,
)
from worksession.protocol.outbound import OpenOrder, PendingWork
from worksession.sessions import repository as session_repository
from worksession.sessions.states import WorkOrderStatus


async def get_work_order(db: AsyncSession, work_id: int) -> WorkOrderView:
    """The order with its offers and session; ``WorkNotFound`` if there is none."""
    # PostgreSQL refuses to even compare an id beyond the int4 key; such an order is
    # simply not there.
    row = await repository.get_order(db, work_id) if 1 <= work_id <= MAX_WORK_ID else None
    if row is None:
        raise WorkNotFound
    offers = await offer_repository.offers_of(db, work_id)
    return order_view(row, offers, await session_repository.session_id_of_order(db, work_id))


async def pending_work_for(
    db: AsyncSession, provider_id: str, *, now: datetime | None = None
) -> list[PendingWork]:
    """``connected.pending_work``: the offers this provider may still accept, oldest first."""
    orders = await repository.open_offers_for(db, provider_id, now=now or utcnow())
    return [pending_work(order) for order in orders]


async def open_orders_for(
    db: AsyncSession, seeker_id: str, *, now: datetime | None = None
) -> list[OpenOrder]:
    """``connected.open_orders``: the seeker's orders still pending, oldest first. One whose
    deadline passed is left out, as from ``pending_work``: nobody can accept it any more."""
    orders = await repository.open_orders_of(db, seeker_id, now=now or utcnow())
    return [open_order(order) for order in orders]


ORDER_CURSOR_KIND: Final = "o1"
DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 100


def encode_order_cursor(work_id: int) -> str:
    """The opaque cursor of ``GET /v1/me/work-orders``: ``["o1", <work id>]`` (see
    ``kit/cursor.py``), a keyset page on the order's id, newest first."""
    return cursor.encode(ORDER_CURSOR_KIND, work_id)


def decode_order_cursor(text: str) -> int:
    """The work id a cursor carries; raises ``kit.cursor.InvalidCursor``."""
    (work_id,) = cursor.decode(ORDER_CURSOR_KIND, text, arity=1, maxima=(MAX_WORK_ID,))
    return work_id


async def my_work_orders(
    db: AsyncSession,
    *,
    user_id: str,
    role: str,
    before_id: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    now: datetime | None = None,
) -> MyWorkOrderPage:
    """A page of the caller's orders, newest first; one row beyond ``limit`` is read to
    know whether another page exists, so the last page has no cursor."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be within 1..{MAX_PAGE_SIZE}")
    now = now or utcnow()
    lines = await repository.orders_of(
        db, user_id=user_id, role=role, before_id=before_id, limit=limit + 1
    )
    page = lines[:limit]
    return MyWorkOrderPage(
        work_orders=[
            MyWorkOrder(
                work_id=work_id,
                status=_shown_status(status, expires_at, now),
                created_at=created_at,
                expires_at=expires_at,
                session_id=session_id,
            )
            for work_id, status, created_at, expires_at, session_id in page
        ],
        next_cursor=encode_order_cursor(page[-1][0]) if len(lines) > limit else None,
    )


def _shown_status(status: str, expires_at: datetime, now: datetime) -> OrderStatusName:
    # Past its deadline a pending order can no longer be accepted or withdrawn: it has
    # expired, whether or not the expiry job has marked it yet.
    if status == WorkOrderStatus.PENDING and expires_at <= now:
        return "expired"
    return cast(OrderStatusName, status)
