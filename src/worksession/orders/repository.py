"""Reads of ``work_orders`` (the pipeline's store writes them)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import WorkOffer, WorkOrder, WorkSession
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


async def open_orders_of(db: AsyncSession, seeker_id: str, *, now: datetime) -> list[WorkOrder]:
    """The seeker's pending orders whose deadline has not passed, oldest first."""
    query = (
        select(WorkOrder)
        .where(
            WorkOrder.seeker_id == seeker_id,
            WorkOrder.status == WorkOrderStatus.PENDING.value,
            WorkOrder.offer_expires_at > now,
        )
        .order_by(WorkOrder.id)
    )
    return list((await db.execute(query)).scalars())


OrderLine = tuple[int, str, datetime, datetime, uuid.UUID | None]
"""(work id, status, created_at, offer_expires_at, session id or None)."""


async def orders_of(
    db: AsyncSession, *, user_id: str, role: str, before_id: int | None, limit: int
) -> list[OrderLine]:
    """Up to ``limit`` of the user's orders newest first (by id, below ``before_id`` when
    given): a seeker's own, or those offered to a provider. The session id is the order's
    session's, for a provider only if it is theirs (another provider's session is none of
    their business)."""
    columns = (
        WorkOrder.id,
        WorkOrder.status,
        WorkOrder.created_at,
        WorkOrder.offer_expires_at,
        WorkSession.session_id,
    )
    if role == "seeker":
        key = WorkOrder.id
        query = (
            select(*columns)
            .outerjoin(WorkSession, WorkSession.work_order_id == WorkOrder.id)
            .where(WorkOrder.seeker_id == user_id)
        )
    else:
        # Keyed on the offer's column, so that the provider's index serves the order.
        key = WorkOffer.work_order_id
        query = (
            select(*columns)
            .select_from(WorkOffer)
            .join(WorkOrder, WorkOrder.id == WorkOffer.work_order_id)
            .outerjoin(
                WorkSession,
                and_(WorkSession.work_order_id == WorkOrder.id, WorkSession.provider_id == user_id),
            )
            .where(WorkOffer.provider_id == user_id)
        )
    if before_id is not None:
        query = query.where(key < before_id)
    result = await db.execute(query.order_by(key.desc()).limit(limit))
    # The session's id is None where the outer join found none.
    return [(r[0], r[1], r[2], r[3], r[4]) for r in result]
