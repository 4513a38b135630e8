"""The integrity rules that live in the schema, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tests.factories import make_chat_message, make_work_order, make_work_session
from worksession.kit.db import Database
from worksession.models import SessionEvent, WorkSession


async def test_one_live_session_per_provider(db: Database) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s1", provider_id="p1")
    with pytest.raises(IntegrityError, match=r"ux_work_sessions_live_provider|provider_id"):
        async with db.transaction() as s:
            await make_work_session(s, seeker_id="s2", provider_id="p1", state="active")


async def test_one_live_session_per_seeker(db: Database) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s1", provider_id="p1", state="active")
    with pytest.raises(IntegrityError, match=r"ux_work_sessions_live_seeker|seeker_id"):
        async with db.transaction() as s:
            await make_work_session(s, seeker_id="s1", provider_id="p2")


async def test_ended_sessions_do_not_count_as_live(db: Database) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s1", provider_id="p1", state="cancelled")
        await make_work_session(s, seeker_id="s1", provider_id="p1", state="completed")
        await make_work_session(s, seeker_id="s1", provider_id="p1", state="waiting")


async def test_one_session_per_work_order(db: Database) -> None:
    async with db.transaction() as s:
        session = await make_work_session(s, seeker_id="s1", provider_id="p1", state="completed")
        order_id = session.work_order_id
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            s.add(WorkSession(work_order_id=order_id, seeker_id="s9", provider_id="p9"))


async def test_client_msg_id_is_unique_per_sender_and_session(db: Database) -> None:
    async with db.transaction() as s:
        session = await make_work_session(s)
        await make_chat_message(s, session=session, client_msg_id="c1")
        await make_chat_message(s, session=session, client_msg_id=None)
        await make_chat_message(s, session=session, client_msg_id=None)  # NULLs never collide
        await make_chat_message(s, session=session, sender_type="provider", client_msg_id="c1")
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            await make_chat_message(s, session=session, client_msg_id="c1")


async def test_event_seq_is_unique_per_session(db: Database) -> None:
    async with db.transaction() as s:
        session = await make_work_session(s)
        s.add(SessionEvent(session_id=session.id, seq=1, kind="work_accepted", data={}))
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            s.add(SessionEvent(session_id=session.id, seq=1, kind="chat_ready", data={}))


async def test_unknown_state_is_refused(db: Database) -> None:
    with pytest.raises(IntegrityError, match="connection_state"):
        async with db.transaction() as s:
            await make_work_session(s, state="paused")


async def test_times_come_back_aware_utc(db: Database) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    moment = datetime(2026, 1, 2, 9, 0, 0, 123456, tzinfo=ist)
    async with db.transaction() as s:
        order = await make_work_order(s, offer_expires_at=moment)
        order_id = order.id
    async with db.transaction() as s:
        from worksession.models import WorkOrder

        stored = (await s.execute(select(WorkOrder).where(WorkOrder.id == order_id))).scalar_one()
    assert stored.offer_expires_at == moment
    assert stored.offer_expires_at.tzinfo == UTC


async def test_naive_datetimes_are_refused(db: Database) -> None:
    with pytest.raises(Exception, match="naive"):
        async with db.transaction() as s:
            await make_work_order(s, offer_expires_at=datetime(2026, 1, 1))
