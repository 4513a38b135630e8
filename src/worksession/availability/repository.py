"""Reads of ``provider_active_status`` and ``seeker_search_preference``: two one-flag tables
of the same shape, one per role, read together (the pipeline's store writes them)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import ProviderActiveStatus, SeekerSearchPreference


async def provider_active(db: AsyncSession, provider_id: str) -> bool | None:
    query = select(ProviderActiveStatus.is_active).where(
        ProviderActiveStatus.provider_id == provider_id
    )
    return (await db.execute(query)).scalar_one_or_none()


async def seeker_searching(db: AsyncSession, seeker_id: str) -> bool | None:
    query = select(SeekerSearchPreference.is_searching).where(
        SeekerSearchPreference.seeker_id == seeker_id
    )
    return (await db.execute(query)).scalar_one_or_none()
