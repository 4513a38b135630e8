"""The availability flags are upserts: the first write creates the row, later ones update it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from worksession.availability.service import (
    Availability,
    get_availability,
    set_provider_active,
    set_seeker_searching,
)
from worksession.kit.clock import utcnow
from worksession.kit.db import Database
from worksession.models import ProviderActiveStatus, SeekerSearchPreference


async def test_a_user_never_set_has_no_flags(db: Database) -> None:
    async with db.transaction() as s:
        assert await get_availability(s, "u1") == Availability(
            provider_active=None, seeker_searching=None
        )


async def test_provider_active_is_created_then_updated_in_place(db: Database) -> None:
    first, later = utcnow() - timedelta(minutes=5), utcnow()
    async with db.transaction() as s:
        await set_provider_active(s, "p1", True, now=first)
    async with db.transaction() as s:
        await set_provider_active(s, "p1", False, now=later)

    async with db.transaction() as s:
        rows = (await s.execute(select(ProviderActiveStatus))).scalars().all()
        availability = await get_availability(s, "p1")
    assert [(r.provider_id, r.is_active, r.updated_at) for r in rows] == [("p1", False, later)]
    assert availability == Availability(provider_active=False, seeker_searching=None)


async def test_seeker_searching_is_created_then_updated_in_place(db: Database) -> None:
    first, later = utcnow() - timedelta(minutes=5), utcnow()
    async with db.transaction() as s:
        await set_seeker_searching(s, "s1", False, now=first)
        await set_seeker_searching(s, "s1", True, now=later)

    async with db.transaction() as s:
        rows = (await s.execute(select(SeekerSearchPreference))).scalars().all()
        availability = await get_availability(s, "s1")
    assert [(r.seeker_id, r.is_searching, r.updated_at) for r in rows] == [("s1", True, later)]
    assert availability == Availability(provider_active=None, seeker_searching=True)


async def test_the_two_flags_of_one_user_are_independent(db: Database) -> None:
    async with db.transaction() as s:
        await set_provider_active(s, "u1", False)
        await set_seeker_searching(s, "u1", True)
        await set_provider_active(s, "u2", True)

    async with db.transaction() as s:
        assert await get_availability(s, "u1") == Availability(
            provider_active=False, seeker_searching=True
        )
        count = select(func.count()).select_from(ProviderActiveStatus)
        assert (await s.execute(count)).scalar_one() == 2
