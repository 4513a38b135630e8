from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import make_chat_message, make_work_order, make_work_session
from tests.pipeline_run import NOW, policy, run
from worksession.kit.clock import utcnow
from worksession.kit.db import Database
from worksession.models import ChatMessage, SessionEvent, WorkOrder, WorkSession
from worksession.models.work_session import PERSONAL_COLUMNS
from worksession.pipeline.commands import SweepExpired


async def _count(db: Database, model: type[object]) -> int:
    async with db.transaction() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_sweep_deletes_only_what_expired(db: Database) -> None:
    now = utcnow()
    async with db.transaction() as s:
        old = await make_work_session(
            s,
            seeker_id="s1",
            provider_id="p1",
            state="cancelled",
            cancelled_at=now - timedelta(hours=25),
        )
        recent = await make_work_session(
            s,
            seeker_id="s2",
            provider_id="p2",
            state="completed",
            completed_at=now - timedelta(hours=1),
        )
        live = await make_work_session(s, seeker_id="s3", provider_id="p3", state="active")
        await make_chat_message(s, session=old, expires_at=now - timedelta(hours=1))
        await make_chat_message(s, session=recent, expires_at=now + timedelta(hours=23))
        await make_chat_message(s, session=live)  # live sessions' messages never expire
        for session in (old, recent, live):
            s.add(SessionEvent(session_id=session.id, seq=1, kind="work_accepted", data={}))

    outcome, _ = await run(db, SweepExpired(), now=now, rules=policy(retention_hours=24))

    [result] = outcome.swept
    assert (result.messages, result.events) == (1, 1)
    assert await _count(db, ChatMessage) == 2
    assert await _count(db, SessionEvent) == 2

    again, _ = await run(db, SweepExpired(), now=now, rules=policy(retention_hours=24))
    [result] = again.swept
    assert (result.messages, result.events) == (0, 0)


# --- personal data (PROTOCOL 5, 1.1) --------------------------------------------------------

MEDIUMS = {"whatsapp": "9876543210"}
POSITIONS: dict[str, Any] = {
    "seeker_latitude": 12.97,
    "seeker_longitude": 77.59,
    "provider_latitude": 12.98,
    "provider_longitude": 77.60,
    "distance_seeker_latitude": 12.97,
    "distance_seeker_longitude": 77.59,
    "distance_provider_latitude": 12.98,
    "distance_provider_longitude": 77.60,
    "current_distance_meters": 1500.0,
}


KEPT_COLUMNS = (
    "id",
    "session_id",
    "work_order_id",
    "seeker_id",
    "provider_id",
    "connection_state",
    "last_seq",
    "chat_room_id",
    "cancelled_by",
    "cancelled_by_id",
    "cancelled_at",
    "completed_at",
    "mediums_shared_at",
    "seeker_last_location_update",
    "provider_last_location_update",
    "created_at",
    "updated_at",
)
"""Ids, states and times: what the erasure leaves."""


async def _personal_session(
    s: AsyncSession, *, user: str, state: str, ended: datetime | None
) -> WorkSession:
    times: dict[str, Any] = {}
    if state == "cancelled":
        times = {"cancelled_at": ended, "cancelled_by": "seeker", "cancelled_by_id": f"s-{user}"}
    elif state == "completed":
        times = {"completed_at": ended}
    return await make_work_session(
        s,
        seeker_id=f"s-{user}",
        provider_id=f"p-{user}",
        state=state,
        seeker_selected_mediums=MEDIUMS,
        provider_selected_mediums={"call": "8123456789"},
        mediums_shared_at=NOW - timedelta(days=2),
        seeker_last_location_update=NOW - timedelta(days=2),
        provider_last_location_update=NOW - timedelta(days=2),
        **POSITIONS,
        **times,
    )


async def _sessions(db: Database) -> dict[str, WorkSession]:
    async with db.transaction() as s:
        found = (await s.execute(select(WorkSession))).scalars().all()
        return {w.seeker_id: w for w in found}


async def test_sweep_erases_mediums_and_positions_of_sessions_ended_past_retention(
    db: Database,
) -> None:
    async with db.transaction() as s:
        for user, state, ended in (
            ("old-cancel", "cancelled", NOW - timedelta(hours=25)),
            ("old-complete", "completed", NOW - timedelta(hours=24)),  # exactly the retention
            ("recent", "completed", NOW - timedelta(hours=23)),
            ("live", "active", None),
        ):
            session = await _personal_session(s, user=user, state=state, ended=ended)
            await make_chat_message(s, session=session, expires_at=None)
            s.add(SessionEvent(session_id=session.id, seq=1, kind="work_accepted", data={}))
    before = await _sessions(db)

    outcome, published = await run(db, SweepExpired(), now=NOW, rules=policy(retention_hours=24))

    [result] = outcome.swept
    # Both old sessions lose their events and every message left (none had expired yet).
    assert (result.sessions, result.events, result.messages) == (2, 2, 2)
    assert published == []
    after = await _sessions(db)
    for user in ("s-old-cancel", "s-old-complete"):
        erased, was = after[user], before[user]
        assert {c: getattr(erased, c) for c in PERSONAL_COLUMNS} == dict.fromkeys(PERSONAL_COLUMNS)
        assert erased.erased_at == NOW
        assert {c: getattr(erased, c) for c in KEPT_COLUMNS} == {
            c: getattr(was, c) for c in KEPT_COLUMNS
        }
    for user in ("s-recent", "s-live"):
        untouched = after[user]
        assert untouched.seeker_selected_mediums == MEDIUMS
        assert untouched.seeker_latitude == POSITIONS["seeker_latitude"]
        assert untouched.erased_at is None
    assert await _count(db, ChatMessage) == 2
    assert await _count(db, SessionEvent) == 2

    again, _ = await run(db, SweepExpired(), now=NOW, rules=policy(retention_hours=24))
    [result] = again.swept
    assert (result.sessions, result.events, result.messages, result.orders) == (0, 0, 0, 0)
    assert (await _sessions(db))["s-old-cancel"].erased_at == NOW  # not erased a second time


async def _order(s: AsyncSession, status: str, ended: datetime, **fields: Any) -> int:
    order = await make_work_order(
        s,
        seeker_id=f"s-{status}",
        status=status,
        details={"address": "12 MG Road", "phone": "9876543210"},
        seeker_latitude=12.97,
        seeker_longitude=77.59,
        created_at=ended - timedelta(minutes=2),
        updated_at=ended,
        **fields,
    )
    return order.id


async def test_sweep_erases_details_and_location_of_orders_ended_past_retention(
    db: Database,
) -> None:
    old = NOW - timedelta(hours=25)
    async with db.transaction() as s:
        gone = {
            status: await _order(s, status, old)
            for status in ("rejected", "expired", "cancelled", "withdrawn")
        }
        kept = {
            "pending": await _order(s, "pending", old, offer_expires_at=NOW + timedelta(minutes=1)),
            "accepted": await _order(s, "accepted", old),
            "recent": await _order(s, "completed", NOW - timedelta(hours=23)),
        }

    outcome, _ = await run(db, SweepExpired(), now=NOW, rules=policy(retention_hours=24))

    [result] = outcome.swept
    assert result.orders == 4
    async with db.transaction() as s:
        orders = {o.id: o for o in (await s.execute(select(WorkOrder))).scalars()}
    for work_id in gone.values():
        order = orders[work_id]
        assert (order.details, order.seeker_latitude, order.seeker_longitude) == ({}, None, None)
        assert (order.erased_at, order.updated_at) == (NOW, old)
    for work_id in kept.values():
        order = orders[work_id]
        assert order.details["phone"] == "9876543210"
        assert (order.seeker_latitude, order.erased_at) == (12.97, None)

    again, _ = await run(db, SweepExpired(), now=NOW, rules=policy(retention_hours=24))
    assert again.swept[0].orders == 0


ERASED_ROWS = 3000


async def _seed_erased_history(db: Database) -> None:
    """A deployment that has run a while: thousands of orders and sessions that ended and
    were erased long ago, and one of each still to erase."""
    ended = NOW - timedelta(days=3)
    orders = [
        {
            "seeker_id": f"s{i}",
            "status": "completed",
            "details": {},
            "offer_expires_at": ended,
            "created_at": ended,
            "updated_at": ended,
            "erased_at": ended + timedelta(days=1),
        }
        for i in range(1, ERASED_ROWS + 1)
    ]
    async with db.transaction() as s:
        stored = await s.execute(insert(WorkOrder).returning(WorkOrder.id), orders)
        work_ids = list(stored.scalars())
    sessions = [
        {
            "session_id": uuid.uuid4(),
            "work_order_id": work_id,
            "seeker_id": f"s{work_id}",
            "provider_id": f"p{work_id}",
            "connection_state": "completed",
            "last_seq": 3,
            "completed_at": ended,
            "created_at": ended,
            "updated_at": ended,
            "erased_at": ended + timedelta(days=1),
        }
        for work_id in work_ids
    ]
    async with db.transaction() as s:
        await s.execute(insert(WorkSession), sessions)
        await _personal_session(s, user="due", state="cancelled", ended=NOW - timedelta(hours=30))
        await _order(s, "rejected", NOW - timedelta(hours=30))
    async with db.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("ANALYZE")


async def _postgres_plans(db: Database) -> list[str]:
    import asyncpg

    from worksession.pipeline import postgres

    dsn = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, server_settings=postgres.SERVER_SETTINGS)
    try:
        cutoff = NOW - timedelta(hours=24)
        return [
            "\n".join(r[0] for r in await connection.fetch(f"EXPLAIN {statement}", cutoff, NOW))
            for statement in (postgres._ERASE_SESSIONS, postgres._ERASE_ORDERS)
        ]
    finally:
        await connection.close()


async def _sqlite_plans(db: Database) -> list[str]:
    """The plans of the statements a real sweep runs, captured as it runs them."""
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith(("UPDATE", "DELETE")):
            statements.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        outcome, _ = await run(db, SweepExpired(), now=NOW, rules=policy(retention_hours=24))
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert (outcome.swept[0].sessions, outcome.swept[0].orders) == (1, 1)
    plans = []
    async with db.engine.connect() as connection:
        for statement, parameters in statements:
            result = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plans.append(f"{statement}\n" + "\n".join(str(r[-1]) for r in result))
    return [p for p in plans if "work_sessions" in p or "work_orders" in p]


async def test_the_sweep_reads_only_what_is_left_to_erase(db: Database) -> None:
    """Set-based and index-backed: with thousands of long-erased rows, neither the
    sessions nor the orders are read whole (the soak fails on a sequential scan of
    work_sessions); each statement goes through the partial index of what is left."""
    await _seed_erased_history(db)

    if db.dialect == "postgresql":
        sessions_plan, orders_plan = await _postgres_plans(db)
        assert "ix_work_sessions_to_erase" in sessions_plan, sessions_plan
        assert "Seq Scan on work_sessions" not in sessions_plan, sessions_plan
        assert "ix_work_orders_to_erase" in orders_plan, orders_plan
        assert "Seq Scan on work_orders" not in orders_plan, orders_plan
        return
    plans = await _sqlite_plans(db)
    assert len(plans) == 4, plans  # events, messages and sessions by session; orders
    for plan in plans:
        assert "USING INDEX ix_work_sessions_to_erase" in plan or (
            "USING INDEX ix_work_orders_to_erase" in plan
        ), plan
        assert "SCAN work_sessions" not in plan, plan
        assert "SCAN work_orders" not in plan, plan
