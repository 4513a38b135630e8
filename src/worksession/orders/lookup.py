"""What the service tells about work orders without changing them: the internal API's view
of an order and a provider's open offers (``connected.pending_work``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from worksession.errors import WorkNotFound
from worksession.kit.clock import utcnow
from worksession.orders import offer_repository, repository
from worksession.orders.offers import order_view, pending_work
from worksession.orders.schemas import MAX_WORK_ID, WorkOrderView
from worksession.protocol.outbound import PendingWork
from worksession.sessions import repository as session_repository


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
