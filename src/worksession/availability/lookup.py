"""A user's availability flags as the internal API reads them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from worksession.availability import repository
from worksession.availability.flags import Availability


async def get_availability(db: AsyncSession, user_id: str) -> Availability:
    """Both flags of ``user_id``; a flag never set is ``None``."""
    return Availability(
        provider_active=await repository.provider_active(db, user_id),
        seeker_searching=await repository.seeker_searching(db, user_id),
    )
