"""Whether a provider takes offers and whether a seeker is searching.

A user id is opaque and may act in both roles, so the two flags live in separate tables and
each is ``None`` until it has been set once.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.availability import repository
from worksession.kit.clock import utcnow


class Availability(BaseModel):
    model_config = ConfigDict(frozen=True)

    provider_active: bool | None
    seeker_searching: bool | None


async def set_provider_active(
    db: AsyncSession, provider_id: str, active: bool, *, now: datetime | None = None
) -> None:
    """Create or update the provider's active status."""
    await repository.upsert_provider_active(
        db, provider_id=provider_id, active=active, now=now or utcnow()
    )


async def set_seeker_searching(
    db: AsyncSession, seeker_id: str, searching: bool, *, now: datetime | None = None
) -> None:
    """Create or update the seeker's search preference."""
    await repository.upsert_seeker_searching(
        db, seeker_id=seeker_id, searching=searching, now=now or utcnow()
    )


async def get_availability(db: AsyncSession, user_id: str) -> Availability:
    """Both flags of ``user_id``; a flag never set is ``None``."""
    return Availability(
        provider_active=await repository.provider_active(db, user_id),
        seeker_searching=await repository.seeker_searching(db, user_id),
    )
