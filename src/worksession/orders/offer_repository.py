"""Reads of ``work_offers`` (the pipeline's store writes them)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import WorkOffer


async def offers_of(db: AsyncSession, work_id: int) -> list[WorkOffer]:
    query = select(WorkOffer).where(WorkOffer.work_order_id == work_id).order_by(WorkOffer.id)
    return list((await db.execute(query)).scalars())
