"""Reads of ``work_orders`` (the pipeline's store writes them)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import WorkOffer, WorkOrder
from worksession.sessions.states import OfferStatus, WorkOrderStatus


async def get_order(db: AsyncSession, work_id: int) -> WorkOrder | None:
    return await db.get(WorkOrder, work_id)


async def open_offers_for(db: AsyncSession, provider_id: str, *, now: datetime) -> list[WorkOrder]:
    """The pending, unexpired orders this provider still has an open offer for, oldest first."""
    query = (
        select(WorkOrder)
        .join(WorkOffer, WorkOffer.work_order_id == WorkOrder.id)
        .where(
            WorkOffer.provider_id == provider_id,
            WorkOffer.status == OfferStatus.OFFERED.value,
            WorkOrder.status == WorkOrderStatus.PENDING.value,
            WorkOrder.offer_expires_at > now,
        )
        .order_by(WorkOrder.created_at, WorkOrder.id)
    )
    return list((await db.execute(query)).scalars())
