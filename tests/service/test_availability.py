"""The availability flags are upserts: the first write creates the row, later ones update it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from tests.pipeline_run import Recorder, pipeline_for, run
from worksession.availability.flags import Availability
from worksession.availability.lookup import get_availability
from worksession.kit.clock import utcnow
from worksession.kit.db import Database
from worksession.models import ProviderActiveStatus, SeekerSearchPreference
from worksession.pipeline.commands import SetAvailability


async def test_a_user_never_set_has_no_flags(db: Database) -> None:
    async with db.transaction() as s:
        assert await get_availability(s, "u1") == Availability(
            provider_active=None, seeker_searching=None
        )


async def test_provider_active_is_created_then_updated_in_place(db: Database) -> None:
    first, later = utcnow() - timedelta(minutes=5), utcnow()
    await run(db, SetAvailability("p1", provider_active=True), now=first)
    await run(db, SetAvailability("p1", provider_active=False), now=later)

    async with db.transaction() as s:
        rows = (await s.execute(select(ProviderActiveStatus))).scalars().all()
        availability = await get_availability(s, "p1")
    assert [(r.provider_id, r.is_active, r.updated_at) for r in rows] == [("p1", False, later)]
    assert availability == Availability(provider_active=False, seeker_searching=None)


async def test_seeker_searching_is_created_then_updated_in_place(db: Database) -> None:
    first, later = utcnow() - timedelta(minutes=5), utcnow()
    # One batch has one clock: two instants take two commands one after the other.
    await run(db, SetAvailability("s1", seeker_searching=False), now=first)
    await run(db, SetAvailability("s1", seeker_searching=True), now=later)

    async with db.transaction() as s:
        rows = (await s.execute(select(SeekerSearchPreference))).scalars().all()
        availability = await get_availability(s, "s1")
    assert [(r.seeker_id, r.is_searching, r.updated_at) for r in rows] == [("s1", True, later)]
    assert availability == Availability(provider_active=None, seeker_searching=True)


async def test_the_two_flags_of_one_user_are_independent(db: Database) -> None:
    # Submitted together, as one transaction made them before.
    pipeline = pipeline_for(db, Recorder(), now=None)
    try:
        await asyncio.gather(
            pipeline.submit(SetAvailability("u1", provider_active=False)),
            pipeline.submit(SetAvailability("u1", seeker_searching=True)),
            pipeline.submit(SetAvailability("u2", provider_active=True)),
        )
    finally:
        await pipeline.store.dispose()

    async with db.transaction() as s:
        assert await get_availability(s, "u1") == Availability(
            provider_active=False, seeker_searching=True
        )
        count = select(func.count()).select_from(ProviderActiveStatus)
        assert (await s.execute(count)).scalar_one() == 2
