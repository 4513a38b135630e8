"""The session commands against the real databases (PROTOCOL 5 and 6)."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, text

from tests.factories import make_chat_message, make_work_session
from tests.pipeline_run import ORIGIN, Recorder, decoded, pipeline_for, policy, run
from worksession.config import Settings
from worksession.errors import InvalidState, SessionNotFound, ValidationFailed
from worksession.geo import EARTH_RADIUS_M, Fix, FixVerdict
from worksession.kit.clock import utcnow
from worksession.kit.db import Database
from worksession.kit.leader import SoleLeader
from worksession.lifespan import build_pipeline
from worksession.models import (
    ChatMessage,
    ProviderActiveStatus,
    SeekerSearchPreference,
    SessionEvent,
    WorkOrder,
    WorkSession,
)
from worksession.pipeline.commands import (
    Actor,
    CancelSession,
    Command,
    CompleteSession,
    ReportLocation,
    Role,
    SelectMediums,
    ShareMediums,
    TouchSession,
)
from worksession.pipeline.decision import ANSWERED_BY_EVENT
from worksession.pipeline.runner import Outcome
from worksession.pipeline.store import Store, Transaction
from worksession.scheduler import Jobs
from worksession.sessions import lookup, repository
from worksession.sessions.location import tick_outbox
from worksession.sessions.schemas import LocationRules

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULES = LocationRules(
    move_threshold_m=50.0, nearby_m=300.0, arrived_m=50.0, max_accuracy_m=100.0, max_speed_kmh=200.0
)
SEEKER, PROVIDER = "seeker-1", "provider-1"
SEEKER_CH, PROVIDER_CH = f"ws:seeker:{SEEKER}", f"ws:provider:{PROVIDER}"
BASE_LAT, BASE_LNG = 12.9716, 77.5946
PHONE = "9876543210"

Published = list[tuple[str, dict[str, Any]]]


def north(metres: float) -> float:
    """The latitude ``metres`` north of BASE_LAT; along a meridian haversine is exact."""
    return BASE_LAT + math.degrees(metres / EARTH_RADIUS_M)


def at(lat: float) -> dict[str, float]:
    """Both participants' position columns with the seeker at BASE and the provider at lat."""
    return {
        "seeker_latitude": BASE_LAT,
        "seeker_longitude": BASE_LNG,
        "provider_latitude": lat,
        "provider_longitude": BASE_LNG,
    }


def baseline(lat: float) -> dict[str, float]:
    """Distance columns as if the last distance_update used seeker at BASE, provider at lat."""
    return {
        "distance_seeker_latitude": BASE_LAT,
        "distance_seeker_longitude": BASE_LNG,
        "distance_provider_latitude": lat,
        "distance_provider_longitude": BASE_LNG,
    }


async def new_session(db: Database, **fields: Any) -> WorkSession:
    fields.setdefault("seeker_id", SEEKER)
    fields.setdefault("provider_id", PROVIDER)
    async with db.transaction() as s:
        return await make_work_session(s, **fields)


async def reload(db: Database, session: WorkSession) -> WorkSession:
    async with db.transaction() as s:
        query = select(WorkSession).where(WorkSession.id == session.id)
        return (await s.execute(query)).scalar_one()


async def logged_kinds(db: Database, session: WorkSession) -> list[tuple[int, str]]:
    async with db.transaction() as s:
        query = (
            select(SessionEvent.seq, SessionEvent.kind)
            .where(SessionEvent.session_id == session.id)
            .order_by(SessionEvent.seq)
        )
        return [(seq, kind) for seq, kind in (await s.execute(query)).all()]


async def refused(
    db: Database, command: Command, error: type[Exception], *, match: str | None = None
) -> Published:
    """Run a command its rules refuse with ``error``; returns what the pipeline published."""
    broker = Recorder()
    pipeline = pipeline_for(db, broker, now=NOW, rules=policy(rules=RULES))
    try:
        with pytest.raises(error, match=match):
            await pipeline.submit(command, origin=ORIGIN)
    finally:
        await pipeline.store.dispose()
    return broker.take()


def assert_event_to_both(
    published: Published,
    outcome: Outcome,
    *,
    session: WorkSession,
    seq: int,
    kind: str,
    data: Any,
) -> None:
    [event] = outcome.events
    assert (event.seq, event.kind, event.data) == (seq, kind, data)
    wire = {
        "session_id": str(session.session_id),
        "seq": seq,
        "kind": kind,
        "data": data,
        "created_at": "2026-03-01T12:00:00.000Z",
    }
    assert published == [(SEEKER_CH, {"event": wire}), (PROVIDER_CH, {"event": wire})]


# --- mediums -------------------------------------------------------------------------


async def test_first_selection_activates_even_when_empty(db: Database) -> None:
    session = await new_session(db, state="waiting")

    outcome, published = await run(
        db, SelectMediums(session.session_id, SEEKER, {}), now=NOW, rules=policy(rules=RULES)
    )

    stored = await reload(db, session)
    assert (stored.connection_state, stored.seeker_selected_mediums) == ("active", {})
    assert stored.mediums_shared_at == NOW
    assert outcome.reply is ANSWERED_BY_EVENT
    data = {"mediums": {}, "connection_state": "active"}
    assert_event_to_both(
        published, outcome, session=session, seq=1, kind="mediums_selected", data=data
    )
    assert await logged_kinds(db, session) == [(1, "mediums_selected")]


async def test_later_selection_replaces_the_earlier_one(db: Database) -> None:
    session = await new_session(
        db, state="active", last_seq=4, seeker_selected_mediums={"call": "9999999999"}
    )

    outcome, published = await run(
        db,
        SelectMediums(session.session_id, SEEKER, {"whatsapp": PHONE}),
        now=None,
        rules=policy(rules=RULES),
    )

    stored = await reload(db, session)
    assert (stored.connection_state, stored.seeker_selected_mediums) == (
        "active",
        {"whatsapp": PHONE},
    )
    assert [(e.seq, e.data["mediums"]) for e in outcome.events] == [(5, {"whatsapp": PHONE})]
    assert len(published) == 2


async def test_share_mediums_keeps_the_state(db: Database) -> None:
    session = await new_session(db, state="waiting")

    outcome, published = await run(
        db,
        ShareMediums(session.session_id, PROVIDER, {"call": PHONE}),
        now=NOW,
        rules=policy(rules=RULES),
    )

    stored = await reload(db, session)
    assert (stored.connection_state, stored.provider_selected_mediums) == (
        "waiting",
        {"call": PHONE},
    )
    assert stored.seeker_selected_mediums is None
    data = {"mediums": {"call": PHONE}}
    assert_event_to_both(
        published, outcome, session=session, seq=1, kind="mediums_shared", data=data
    )


@pytest.mark.parametrize(
    ("who", "same_session"),
    [
        pytest.param("seeker-other", True, id="stranger"),
        pytest.param(PROVIDER, True, id="the-provider-as-seeker"),
        pytest.param(SEEKER, False, id="unknown-session"),
    ],
)
async def test_select_by_a_non_participant_is_session_not_found(
    db: Database, who: str, same_session: bool
) -> None:
    session = await new_session(db)
    session_id = session.session_id if same_session else uuid.uuid4()

    published = await refused(db, SelectMediums(session_id, who, {}), SessionNotFound)

    assert (await reload(db, session)).connection_state == "waiting"
    assert not published


async def test_share_by_the_seeker_is_session_not_found(db: Database) -> None:
    session = await new_session(db)
    with pytest.raises(SessionNotFound):
        await run(db, ShareMediums(session.session_id, SEEKER, {}), rules=policy(rules=RULES))


@pytest.mark.parametrize("state", ["cancelled", "completed"])
async def test_mediums_on_an_ended_session_are_invalid_state(db: Database, state: str) -> None:
    session = await new_session(db, state=state)

    published = await refused(db, SelectMediums(session.session_id, SEEKER, {}), InvalidState)

    stored = await reload(db, session)
    assert (stored.connection_state, stored.seeker_selected_mediums) == (state, None)
    assert not published


# --- location ------------------------------------------------------------------------

DROPPED = "worksession_location_fixes_dropped_total"


def dropped_fixes() -> dict[str, float]:
    """The metric of dropped fixes, per verdict."""
    return {
        verdict.value: REGISTRY.get_sample_value(DROPPED, {"verdict": verdict.value}) or 0.0
        for verdict in FixVerdict
        if verdict is not FixVerdict.ACCEPT
    }


async def locate(
    db: Database,
    session: WorkSession,
    *,
    lat: float,
    accuracy_m: float | None = 10.0,
    recorded_at: datetime | None = None,
) -> tuple[Outcome, Published, dict[str, float]]:
    """A provider's fix, north of BASE on its meridian. Also returns how much the metric of
    dropped fixes grew, per verdict (nothing: the fix was accepted)."""
    fix = Fix(lat=lat, lng=BASE_LNG, accuracy_m=accuracy_m, recorded_at=recorded_at)
    before = dropped_fixes()
    outcome, published = await run(
        db,
        ReportLocation(session.session_id, Actor(PROVIDER, "provider"), fix),
        now=NOW,
        rules=policy(rules=RULES),
    )
    grown = {v: n - before[v] for v, n in dropped_fixes().items() if n != before[v]}
    return outcome, published, grown


def distance_frame(session: WorkSession, metres: float, formatted: str) -> dict[str, Any]:
    return {
        "frame": {
            "type": "distance_update",
            "session_id": str(session.session_id),
            "distance_meters": metres,
            "distance_formatted": formatted,
            "updated_at": "2026-03-01T12:00:00.000Z",
        }
    }


async def test_first_fix_of_one_side_is_stored_without_distance(db: Database) -> None:
    session = await new_session(db)
    recorded = NOW - timedelta(seconds=3)

    outcome, published, dropped = await locate(db, session, lat=north(1000), recorded_at=recorded)

    stored = await reload(db, session)
    assert (stored.provider_latitude, stored.provider_longitude) == (north(1000), BASE_LNG)
    assert stored.provider_last_location_update == NOW
    assert stored.provider_fix_recorded_at == recorded
    assert stored.seeker_latitude is None
    assert (stored.current_distance_meters, stored.last_distance_update) == (None, None)
    assert dropped == {}  # FixVerdict.ACCEPT: no verdict counted a drop
    assert (outcome.events, outcome.reply) == ((), None)
    assert not published


async def test_both_positions_known_send_distance_to_both(db: Database) -> None:
    session = await new_session(db, provider_latitude=north(1234.5), provider_longitude=BASE_LNG)

    outcome, published = await run(
        db,
        ReportLocation(
            session.session_id,
            Actor(SEEKER, "seeker"),
            Fix(lat=BASE_LAT, lng=BASE_LNG, accuracy_m=None, recorded_at=None),
        ),
        now=NOW,
        rules=policy(rules=RULES),
    )

    frame = distance_frame(session, 1234.5, "1.2 km away")
    # No "skip": the sending socket learns the distance through the broker like the others.
    assert published == [(SEEKER_CH, frame), (PROVIDER_CH, frame)]
    assert (outcome.events, outcome.reply) == ((), None)
    stored = await reload(db, session)
    assert (stored.seeker_latitude, stored.seeker_longitude) == (BASE_LAT, BASE_LNG)
    assert stored.seeker_last_location_update == NOW
    assert stored.current_distance_meters == pytest.approx(1234.5)
    assert stored.last_distance_update == NOW
    assert (stored.distance_seeker_latitude, stored.distance_seeker_longitude) == (
        BASE_LAT,
        BASE_LNG,
    )
    assert (stored.distance_provider_latitude, stored.distance_provider_longitude) == (
        north(1234.5),
        BASE_LNG,
    )
    assert await logged_kinds(db, session) == []


async def test_a_move_under_the_threshold_sends_nothing(db: Database) -> None:
    session = await new_session(
        db, **at(north(1000)), **baseline(north(1000)), current_distance_meters=1000.0
    )

    _, published, _ = await locate(db, session, lat=north(1049))

    assert not published
    stored = await reload(db, session)
    assert stored.provider_latitude == north(1049)  # the position is kept all the same
    assert stored.distance_provider_latitude == north(1000)
    assert stored.current_distance_meters == 1000.0


async def test_a_move_of_the_threshold_sends_an_update(db: Database) -> None:
    session = await new_session(
        db, **at(north(1000)), **baseline(north(1000)), current_distance_meters=1000.0
    )

    _, published, _ = await locate(db, session, lat=north(1050.5))

    frame = distance_frame(session, 1050.5, "1.1 km away")
    assert published == [(SEEKER_CH, frame), (PROVIDER_CH, frame)]
    stored = await reload(db, session)
    assert stored.distance_provider_latitude == north(1050.5)
    assert stored.current_distance_meters == pytest.approx(1050.5)


@pytest.mark.parametrize(
    ("accuracy_m", "recorded_at", "lat", "verdict"),
    [
        pytest.param(100.5, NOW, north(1010), FixVerdict.INACCURATE, id="inaccurate"),
        pytest.param(
            10.0, NOW - timedelta(seconds=11), north(1010), FixVerdict.OUT_OF_ORDER, id="old"
        ),
        # 2 km in 10 s is 720 km/h.
        pytest.param(10.0, NOW, north(3000), FixVerdict.TOO_FAST, id="too-fast"),
    ],
)
async def test_noisy_fixes_are_dropped_without_a_trace(
    db: Database, accuracy_m: float, recorded_at: datetime, lat: float, verdict: FixVerdict
) -> None:
    before = NOW - timedelta(seconds=10)
    session = await new_session(
        db,
        **at(north(1000)),
        provider_fix_recorded_at=before,
        provider_last_location_update=before,
    )

    outcome, published, dropped = await locate(
        db, session, lat=lat, accuracy_m=accuracy_m, recorded_at=recorded_at
    )

    assert dropped == {verdict.value: 1.0}
    assert (outcome.events, outcome.reply) == ((), None)
    assert not published
    stored = await reload(db, session)
    assert stored.provider_latitude == north(1000)
    assert (stored.provider_fix_recorded_at, stored.provider_last_location_update) == (
        before,
        before,
    )
    assert (stored.current_distance_meters, stored.distance_provider_latitude) == (None, None)


async def test_a_fix_from_the_future_is_a_validation_error(db: Database) -> None:
    session = await new_session(db)

    with pytest.raises(ValidationFailed, match="recorded_at"):
        await locate(db, session, lat=north(10), recorded_at=NOW + timedelta(seconds=61))

    assert (await reload(db, session)).provider_latitude is None


async def test_a_fix_in_an_ended_session_is_invalid_state(db: Database) -> None:
    session = await new_session(db, state="cancelled")
    with pytest.raises(InvalidState):
        await locate(db, session, lat=north(10))


async def test_nearby_fires_once(db: Database) -> None:
    session = await new_session(db, **at(north(1000)), **baseline(north(1000)), last_seq=2)

    outcome, published, _ = await locate(db, session, lat=north(250))

    [event] = outcome.events
    assert (event.seq, event.kind, event.data) == (3, "provider_nearby", {"distance_meters": 250.0})
    assert outcome.reply is None
    assert [m for _, m in published if "event" in m] == [{"event": event.to_wire()}] * 2
    assert (await reload(db, session)).nearby_at == NOW

    again, published, _ = await locate(db, session, lat=north(240))

    assert again.events == ()
    assert not published  # and 10 m is no move worth a distance_update either
    assert await logged_kinds(db, session) == [(3, "provider_nearby")]


async def test_arrived_fires_once_even_without_a_distance_update(db: Database) -> None:
    # The baseline is 60 m; closing 25 m is below the 50 m move rule, so no distance_update
    # goes out, yet the provider has arrived.
    session = await new_session(db, **at(north(60)), **baseline(north(60)), nearby_at=NOW)

    outcome, published, _ = await locate(db, session, lat=north(35))

    assert [(e.kind, e.data) for e in outcome.events] == [
        ("provider_arrived", {"distance_meters": 35.0})
    ]
    assert [channel for channel, m in published if "event" in m] == [SEEKER_CH, PROVIDER_CH]
    assert not [m for _, m in published if "frame" in m]
    assert (await reload(db, session)).arrived_at == NOW

    again, published, _ = await locate(db, session, lat=north(20))
    assert again.events == ()
    assert not published
    assert await logged_kinds(db, session) == [(1, "provider_arrived")]


async def test_a_jump_to_20_m_fires_nearby_then_arrived(db: Database) -> None:
    session = await new_session(db, **at(north(2000)), **baseline(north(2000)))

    outcome, published, _ = await locate(db, session, lat=north(20))

    assert [(e.seq, e.kind) for e in outcome.events] == [
        (1, "provider_nearby"),
        (2, "provider_arrived"),
    ]
    types = [m["frame"]["type"] if "frame" in m else m["event"]["kind"] for _, m in published]
    assert types == ["distance_update"] * 2 + ["provider_nearby"] * 2 + ["provider_arrived"] * 2
    stored = await reload(db, session)
    assert (stored.nearby_at, stored.arrived_at) == (NOW, NOW)
    assert await logged_kinds(db, session) == [(1, "provider_nearby"), (2, "provider_arrived")]


# --- ending --------------------------------------------------------------------------


async def live_session_with_history(db: Database) -> WorkSession:
    """An active session with a message, and both users made unavailable."""
    async with db.transaction() as s:
        session = await make_work_session(
            s, seeker_id=SEEKER, provider_id=PROVIDER, state="active", last_seq=3
        )
        await make_chat_message(s, session=session)
        s.add(ProviderActiveStatus(provider_id=PROVIDER, is_active=False))
        s.add(SeekerSearchPreference(seeker_id=SEEKER, is_searching=False))
    return session


async def ended_state(db: Database, session: WorkSession) -> dict[str, Any]:
    async with db.transaction() as s:
        order = await s.get(WorkOrder, session.work_order_id)
        expiry = (await s.execute(select(ChatMessage.expires_at))).scalars().all()
        active = await s.get(ProviderActiveStatus, PROVIDER)
        searching = await s.get(SeekerSearchPreference, SEEKER)
        assert order is not None
        assert active is not None
        assert searching is not None
        return {
            "order": order.status,
            "expiry": expiry,
            "provider_active": active.is_active,
            "seeker_searching": searching.is_searching,
        }


@pytest.mark.parametrize(
    ("role", "user_id"),
    # The internal API's cancel has no caller id to record (``CancelSession(by=None)``).
    [("seeker", SEEKER), ("provider", PROVIDER), ("system", None)],
)
async def test_cancel(db: Database, role: str, user_id: str | None) -> None:
    session = await live_session_with_history(db)
    by = None if user_id is None else Actor(user_id, cast(Role, role))

    outcome, published = await run(
        db, CancelSession(session.session_id, by=by), now=NOW, rules=policy(retention_hours=24)
    )

    stored = await reload(db, session)
    assert (stored.connection_state, stored.cancelled_by, stored.cancelled_by_id) == (
        "cancelled",
        role,
        user_id,
    )
    assert (stored.cancelled_at, stored.completed_at) == (NOW, None)
    assert await ended_state(db, session) == {
        "order": "cancelled",
        "expiry": [NOW + timedelta(hours=24)],
        "provider_active": True,
        "seeker_searching": True,
    }
    data = {"cancelled_by": role}
    assert_event_to_both(
        published, outcome, session=session, seq=4, kind="connection_cancelled", data=data
    )


# --- abandoned sessions (PROTOCOL 5, *1.1*) ------------------------------------------------

ABANDON_AFTER = timedelta(hours=12)


@asynccontextmanager
async def abandonment_jobs(db: Database) -> AsyncIterator[tuple[Jobs, Recorder]]:
    """The leader's jobs on ``db``, on the real clock, with the default 12 idle hours."""
    settings = Settings(env="test", abandon_after_s=ABANDON_AFTER.total_seconds())
    broker = Recorder()
    pipeline = build_pipeline(settings, db, broker)
    try:
        yield Jobs(settings, db, pipeline, broker, SoleLeader()), broker
    finally:
        await pipeline.store.dispose()


async def test_a_session_untouched_past_the_limit_is_cancelled_with_every_effect(
    db: Database,
) -> None:
    session = await live_session_with_history(db)
    async with db.transaction() as s:
        stored = await s.get(WorkSession, session.id)
        assert stored is not None
        stored.updated_at = utcnow() - ABANDON_AFTER - timedelta(minutes=1)

    async with abandonment_jobs(db) as (jobs, broker):
        before = utcnow()
        assert await jobs.cancel_abandoned() == 1
        after = utcnow()
        published = broker.take()
        assert await jobs.cancel_abandoned() == 0  # once

    stored = await reload(db, session)
    assert (stored.connection_state, stored.cancelled_by, stored.cancelled_by_id) == (
        "cancelled",
        "system",
        None,
    )
    assert stored.cancelled_at is not None
    assert before <= stored.cancelled_at <= after
    ended = await ended_state(db, session)
    assert ended == {
        "order": "cancelled",
        "expiry": [stored.cancelled_at + timedelta(hours=24)],
        "provider_active": True,
        "seeker_searching": True,
    }
    assert [
        (channel, m["event"]["seq"], m["event"]["kind"], m["event"]["data"])
        for channel, m in published
    ] == [
        (SEEKER_CH, 4, "connection_cancelled", {"cancelled_by": "system"}),
        (PROVIDER_CH, 4, "connection_cancelled", {"cancelled_by": "system"}),
    ]


async def test_a_session_touched_within_the_limit_is_left_alone(db: Database) -> None:
    session = await new_session(db, state="active")
    async with db.transaction() as s:
        stored = await s.get(WorkSession, session.id)
        assert stored is not None
        stored.updated_at = utcnow() - ABANDON_AFTER + timedelta(minutes=1)

    async with abandonment_jobs(db) as (jobs, broker):
        assert await jobs.cancel_abandoned() == 0
        assert broker.take() == []
    assert (await reload(db, session)).connection_state == "active"


@pytest.mark.parametrize("frame", ["location", "mediums", "typing or resume"])
async def test_a_frame_for_the_session_resets_the_clock(db: Database, frame: str) -> None:
    session = await new_session(db, state="active")
    async with db.transaction() as s:
        stored = await s.get(WorkSession, session.id)
        assert stored is not None
        stored.updated_at = utcnow() - ABANDON_AFTER - timedelta(minutes=1)
    commands: dict[str, Command] = {
        "location": ReportLocation(
            session.session_id, Actor(PROVIDER, "provider"), Fix(BASE_LAT, BASE_LNG, 5.0, None)
        ),
        "mediums": SelectMediums(session.session_id, SEEKER, {"call": PHONE}),
        "typing or resume": TouchSession(session.session_id, Actor(SEEKER, "seeker")),
    }
    command = commands[frame]

    async with abandonment_jobs(db) as (jobs, broker):
        await jobs.pipeline.submit(command, origin=ORIGIN)
        broker.take()
        assert await jobs.cancel_abandoned() == 0
        assert broker.take() == []
    assert (await reload(db, session)).connection_state == "active"


async def test_abandonment_reads_live_sessions_through_the_index(db: Database) -> None:
    """The job's query must not scan work_sessions (the benchmark soak fails on that). On
    SQLite the plan is read with the values bound as the job binds them: a partial index is
    chosen only when the query repeats its predicate, which ``IN (?, ?)`` does not."""
    query = repository.abandoned_session_ids_query(idle_since=utcnow(), limit=200)
    async with db.transaction() as s:
        if db.dialect == "postgresql":
            await s.execute(text("SET LOCAL enable_seqscan = off"))
            literal = query.compile(dialect=s.bind.dialect, compile_kwargs={"literal_binds": True})
            rows = (await s.execute(text(f"EXPLAIN {literal}"))).all()
            plan = "\n".join(row[0] for row in rows)
        else:
            bound = query.compile(dialect=s.bind.dialect)
            # Positional values as the driver gets them (the plan does not depend on them).
            values = tuple(
                str(v) if isinstance(v, datetime) else v
                for v in (bound.params[name] for name in bound.positiontup or ())
            )
            connection = await s.connection()
            result = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {bound}", values)
            plan = "\n".join(str(row[-1]) for row in result.all())
    assert "ix_work_sessions_live_touched" in plan, plan


async def test_cancel_by_a_stranger_is_session_not_found(db: Database) -> None:
    session = await new_session(db)
    with pytest.raises(SessionNotFound):
        await run(
            db,
            CancelSession(session.session_id, by=Actor("seeker-other", "seeker")),
            now=None,
            rules=policy(retention_hours=24),
        )
    assert (await reload(db, session)).connection_state == "waiting"


def cancel(session: WorkSession) -> CancelSession:
    return CancelSession(session.session_id, by=Actor(SEEKER, "seeker"))


def complete(session: WorkSession) -> CompleteSession:
    return CompleteSession(session.session_id, provider_id=PROVIDER)


@pytest.mark.parametrize("first", [cancel, complete], ids=["cancelled", "completed"])
async def test_cancel_after_an_ending_is_invalid_state(
    db: Database, first: Callable[[WorkSession], Command]
) -> None:
    session = await new_session(db)
    await run(db, first(session), now=None, rules=policy(retention_hours=24))

    published = await refused(db, cancel(session), InvalidState)

    assert not published
    assert len(await logged_kinds(db, session)) == 1


@asynccontextmanager
async def opened_together(store: Store, barrier: asyncio.Barrier) -> AsyncIterator[Transaction]:
    """A transaction of ``store`` that waits, once open, until the other one is open too."""
    async with store.transaction() as tx:
        await barrier.wait()
        yield tx


class BarrierStore:
    """``store`` whose first transaction meets the other pipeline's at ``barrier`` before it
    loads anything (a second one, a retry, goes straight on)."""

    def __init__(self, store: Store, barrier: asyncio.Barrier) -> None:
        self.dialect = store.dialect
        self._store, self._barrier = store, barrier
        self._met = False

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        if self._met:
            return self._store.transaction()
        self._met = True
        return opened_together(self._store, self._barrier)

    async def dispose(self) -> None:
        await self._store.dispose()


async def test_cancel_racing_complete_leaves_exactly_one_outcome(db: Database) -> None:
    session = await live_session_with_history(db)
    # Two pipelines, as on two workers. On PostgreSQL both transactions are open before
    # either locks the row, so the second really waits on FOR UPDATE. SQLite's single pooled
    # connection serialises them anyway (a barrier there would deadlock), which is the
    # embedded mode's guarantee to check.
    barrier = asyncio.Barrier(2) if db.dialect == "postgresql" else None

    async def attempt(command: Command) -> Published | None:
        broker = Recorder()
        pipeline = pipeline_for(db, broker, now=None, rules=policy(retention_hours=24))
        if barrier is not None:
            pipeline.store = BarrierStore(pipeline.store, barrier)
        try:
            await pipeline.submit(command, origin=ORIGIN)
        except InvalidState:
            return None
        finally:
            await pipeline.store.dispose()
        return broker.take()

    outcomes = await asyncio.gather(attempt(cancel(session)), attempt(complete(session)))

    winners = [name for name, o in zip(["cancelled", "completed"], outcomes, strict=True) if o]
    assert len(winners) == 1
    [winner] = winners
    assert (await reload(db, session)).connection_state == winner
    state = await ended_state(db, session)
    assert state["order"] == winner
    assert state["seeker_searching"] is (winner == "cancelled")
    terminal = "connection_cancelled" if winner == "cancelled" else "session_completed"
    assert await logged_kinds(db, session) == [(4, terminal)]


@pytest.mark.parametrize("provider_id", [PROVIDER, None], ids=["provider", "internal"])
async def test_complete(db: Database, provider_id: str | None) -> None:
    session = await live_session_with_history(db)

    outcome, published = await run(
        db,
        CompleteSession(session.session_id, provider_id),
        now=NOW,
        rules=policy(retention_hours=24),
    )

    stored = await reload(db, session)
    assert (stored.connection_state, stored.completed_at, stored.cancelled_at) == (
        "completed",
        NOW,
        None,
    )
    assert await ended_state(db, session) == {
        "order": "completed",
        "expiry": [NOW + timedelta(hours=24)],
        "provider_active": True,
        "seeker_searching": False,
    }
    assert_event_to_both(
        published, outcome, session=session, seq=4, kind="session_completed", data={}
    )


async def test_complete_by_the_seeker_is_session_not_found(db: Database) -> None:
    session = await new_session(db)
    with pytest.raises(SessionNotFound):
        await run(
            db,
            CompleteSession(session.session_id, provider_id=SEEKER),
            now=None,
            rules=policy(retention_hours=24),
        )
    assert (await reload(db, session)).connection_state == "waiting"


async def check_replay(db: Database, session: WorkSession, user_id: str = SEEKER) -> None:
    async with db.transaction() as s:
        await lookup.replay_allowed(
            s,
            session_id=session.session_id,
            user_id=user_id,
            role="seeker",
            retention=timedelta(hours=24),
            now=NOW,
        )


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"state": "active"}, id="live"),
        pytest.param(
            {"state": "cancelled", "cancelled_at": NOW - timedelta(hours=23)}, id="ended-recently"
        ),
    ],
)
async def test_replay_is_allowed_until_the_history_expires(
    db: Database, fields: dict[str, Any]
) -> None:
    await check_replay(db, await new_session(db, **fields))


async def test_replay_of_an_expired_history_is_invalid_state(db: Database) -> None:
    session = await new_session(db, state="completed", completed_at=NOW - timedelta(hours=24))
    with pytest.raises(InvalidState):
        await check_replay(db, session)


async def test_replay_by_a_stranger_is_session_not_found(db: Database) -> None:
    session = await new_session(db)
    with pytest.raises(SessionNotFound):
        await check_replay(db, session, user_id="seeker-other")


# --- snapshot ------------------------------------------------------------------------


async def test_snapshot_of_a_live_session(db: Database) -> None:
    room = uuid.uuid4()
    session = await new_session(
        db,
        state="active",
        last_seq=7,
        chat_room_id=room,
        seeker_selected_mediums={"call": PHONE},
        **at(north(1234.5)),
    )

    async with db.transaction() as s:
        snapshot = await lookup.snapshot_for(s, user_id=PROVIDER, role="provider")

    assert snapshot is not None
    frame = snapshot.model_dump(mode="json")
    assert frame == {
        "session_id": str(session.session_id),
        "work_id": session.work_order_id,
        "connection_state": "active",
        "your_role": "provider",
        "chat_room_id": str(room),
        "mediums": {"seeker": {"call": PHONE}, "provider": None},
        "distance_meters": 1234.5,
        "distance_formatted": "1.2 km away",
        "last_seq": 7,
        "peer_online": False,  # the database cannot tell; the gateway asks the broker
    }
    json.dumps(frame)  # plain JSON all the way down
    async with db.transaction() as s:
        view = await lookup.live_view_for(s, user_id=PROVIDER, role="provider")
    assert view is not None
    assert (view.snapshot, view.peer_role, view.peer_id) == (snapshot, "seeker", SEEKER)
    assert view.with_presence(True).peer_online


async def test_snapshot_before_positions_and_chat(db: Database) -> None:
    await new_session(db)
    async with db.transaction() as s:
        snapshot = await lookup.snapshot_for(s, user_id=SEEKER, role="seeker")
    assert snapshot is not None
    assert (snapshot.your_role, snapshot.connection_state, snapshot.chat_room_id) == (
        "seeker",
        "waiting",
        None,
    )
    assert (snapshot.distance_meters, snapshot.distance_formatted) == (None, None)
    assert snapshot.model_dump(mode="json")["mediums"] == {"seeker": None, "provider": None}


async def test_no_snapshot_without_a_live_session(db: Database) -> None:
    await new_session(db, state="completed")
    async with db.transaction() as s:
        assert await lookup.snapshot_for(s, user_id=SEEKER, role="seeker") is None
        # The seeker's id in the provider role is someone else entirely.
        assert await lookup.snapshot_for(s, user_id=SEEKER, role="provider") is None


# --- distance tick -------------------------------------------------------------------


async def distance_tick(db: Database, *, now: datetime, batch_size: int) -> tuple[int, Published]:
    """Every keyset page of the tick, as the scheduler reads them; returns how many sessions
    got a ``distance_update`` and the decoded frames, in order."""
    count, after_id, published = 0, 0, []
    while True:
        async with db.transaction() as s:
            page = await repository.live_sessions_with_positions(
                s, after_id=after_id, limit=batch_size
            )
        outbox = tick_outbox(page, now)
        published += [(channel, decoded(payload)) for channel, payload in outbox.messages]
        count += len(page)
        if len(page) < batch_size:
            return count, published
        after_id = page[-1].id


@pytest.mark.parametrize("batch_size", [500, 1])
async def test_distance_tick_covers_every_live_session_with_both_positions(
    db: Database, batch_size: int
) -> None:
    async with db.transaction() as s:
        near = await make_work_session(s, seeker_id="s1", provider_id="p1", **at(north(350)))
        far = await make_work_session(
            s, seeker_id="s2", provider_id="p2", state="active", **at(north(12345))
        )
        await make_work_session(
            s, seeker_id="s3", provider_id="p3", seeker_latitude=1.0, seeker_longitude=2.0
        )
        await make_work_session(s, seeker_id="s4", provider_id="p4", state="cancelled", **at(0))

    count, published = await distance_tick(db, now=NOW, batch_size=batch_size)

    assert count == 2
    assert published == [
        ("ws:seeker:s1", distance_frame(near, 350.0, "350 meters away")),
        ("ws:provider:p1", distance_frame(near, 350.0, "350 meters away")),
        ("ws:seeker:s2", distance_frame(far, 12345.0, "12.3 km away")),
        ("ws:provider:p2", distance_frame(far, 12345.0, "12.3 km away")),
    ]
    # The tick writes nothing: the 50 m rule keeps comparing with the last real update.
    stored = await reload(db, near)
    assert (stored.current_distance_meters, stored.distance_provider_latitude) == (None, None)
