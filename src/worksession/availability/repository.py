"""SQL for the provider active status and the seeker search preference (one row per user)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.kit.db import dialect_insert
from worksession.models import ProviderActiveStatus, SeekerSearchPreference


async def upsert_provider_active(
    db: AsyncSession, *, provider_id: str, active: bool, now: datetime
) -> None:
    statement = dialect_insert(db, ProviderActiveStatus).values(
        provider_id=provider_id, is_active=active, updated_at=now
    )
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=[ProviderActiveStatus.provider_id],
            set_={"is_active": active, "updated_at": now},
        )
    )


async def upsert_seeker_searching(
    db: AsyncSession, *, seeker_id: str, searching: bool, now: datetime
) -> None:
    statement = dialect_insert(db, SeekerSearchPreference).values(
        seeker_id=seeker_id, is_searching=searching, updated_at=now
    )
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=[SeekerSearchPreference.seeker_id],
            set_={"is_searching": searching, "updated_at": now},
        )
    )


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
