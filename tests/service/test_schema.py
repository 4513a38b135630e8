"""The integrity rules that live in the schema, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
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


@pytest.mark.parametrize(("ended", "again"), [("cancelled", "active"), ("completed", "waiting")])
async def test_an_ended_session_never_becomes_live_again(
    db: Database, ended: str, again: str
) -> None:
    """Finding 7e: not even a hand-written UPDATE revives a session (its participants may
    have started others since, and its chat is on its way out)."""
    async with db.transaction() as s:
        session = await make_work_session(s, seeker_id="s1", provider_id="p1", state=ended)
    for state in (again, "completed" if ended == "cancelled" else "cancelled"):
        with pytest.raises(IntegrityError, match="ck_work_sessions_ended_stays_ended"):
            async with db.transaction() as s:
                await s.execute(
                    text("UPDATE work_sessions SET connection_state = :state WHERE id = :id"),
                    {"state": state, "id": session.id},
                )
    # The rest of an ended row may change (the retention sweep erases its positions).
    async with db.transaction() as s:
        await s.execute(
            text(
                "UPDATE work_sessions SET connection_state = connection_state,"
                " seeker_latitude = NULL WHERE id = :id"
            ),
            {"id": session.id},
        )
        stored = await s.scalar(
            text("SELECT connection_state FROM work_sessions WHERE id = :id"), {"id": session.id}
        )
    assert stored == ended


async def test_a_live_session_still_moves_and_ends(db: Database) -> None:
    async with db.transaction() as s:
        session = await make_work_session(s, seeker_id="s1", provider_id="p1")
    for state in ("active", "completed"):
        async with db.transaction() as s:
            await s.execute(
                text("UPDATE work_sessions SET connection_state = :state WHERE id = :id"),
                {"state": state, "id": session.id},
            )


async def test_nobody_is_their_own_provider(db: Database) -> None:
    """Finding 7c: a seeker offered their own order and accepting it would be a session
    with one participant; the database refuses it on insert and on update."""
    with pytest.raises(IntegrityError, match="ck_work_sessions_seeker_not_provider"):
        async with db.transaction() as s:
            await make_work_session(s, seeker_id="u1", provider_id="u1")
    async with db.transaction() as s:
        session = await make_work_session(s, seeker_id="u1", provider_id="u2")
    with pytest.raises(IntegrityError, match="ck_work_sessions_seeker_not_provider"):
        async with db.transaction() as s:
            await s.execute(
                text("UPDATE work_sessions SET provider_id = seeker_id WHERE id = :id"),
                {"id": session.id},
            )
