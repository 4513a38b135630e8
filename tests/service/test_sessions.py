"""The session service against the real databases (PROTOCOL 5 and 6)."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import make_chat_message, make_work_session
from worksession.errors import InvalidState, SessionNotFound, ValidationFailed
from worksession.geo import EARTH_RADIUS_M, Fix, FixVerdict
from worksession.kit.db import Database
from worksession.models import (
    ChatMessage,
    ProviderActiveStatus,
    SeekerSearchPreference,
    SessionEvent,
    TypingIndicator,
    WorkOrder,
    WorkSession,
)
from worksession.outbox import Outbox
from worksession.sessions import service
from worksession.sessions.events import Answer
from worksession.sessions.schemas import LocationRules

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULES = LocationRules(
    move_threshold_m=50.0, nearby_m=300.0, arrived_m=50.0, max_accuracy_m=100.0, max_speed_kmh=200.0
)
SEEKER, PROVIDER = "seeker-1", "provider-1"
SEEKER_CH, PROVIDER_CH = f"ws:seeker:{SEEKER}", f"ws:provider:{PROVIDER}"
BASE_LAT, BASE_LNG = 12.9716, 77.5946
PHONE = "9876543210"


def north(metres: float) -> float:
    """The latitude ``metres`` north of BASE_LAT; along a meridian haversine is exact."""
    return BASE_LAT + math.degrees(metres / EARTH_RADIUS_M)


def sent(outbox: Outbox) -> list[tuple[str, dict[str, Any]]]:
    return [(channel, json.loads(payload)) for channel, payload in outbox.messages]


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


async def run(db: Database, call: Callable[[AsyncSession, Outbox], Awaitable[Any]]) -> Any:
    """One committed transaction around a service call; returns (result, outbox)."""
    outbox = Outbox(origin="socket-1")
    async with db.transaction() as s:
        result = await call(s, outbox)
    return result, outbox


def assert_event_to_both(
    outbox: Outbox, answer: Answer, *, session: WorkSession, seq: int, kind: str, data: Any
) -> None:
    [event] = answer.events
    assert (event.seq, event.kind, event.data) == (seq, kind, data)
    wire = {
        "session_id": str(session.session_id),
        "seq": seq,
        "kind": kind,
        "data": data,
        "created_at": "2026-03-01T12:00:00.000Z",
    }
    assert sent(outbox) == [(SEEKER_CH, {"event": wire}), (PROVIDER_CH, {"event": wire})]


# --- mediums -------------------------------------------------------------------------


async def test_first_selection_activates_even_when_empty(db: Database) -> None:
    session = await new_session(db, state="waiting")

    answer, outbox = await run(
        db,
        lambda s, o: service.select_mediums(
            s, o, session_id=session.session_id, seeker_id=SEEKER, mediums={}, now=NOW
        ),
    )

    stored = await reload(db, session)
    assert (stored.connection_state, stored.seeker_selected_mediums) == ("active", {})
    assert stored.mediums_shared_at == NOW
    assert answer.answers is True
    data = {"mediums": {}, "connection_state": "active"}
    assert_event_to_both(outbox, answer, session=session, seq=1, kind="mediums_selected", data=data)
    assert await logged_kinds(db, session) == [(1, "mediums_selected")]


async def test_later_selection_replaces_the_earlier_one(db: Database) -> None:
    session = await new_session(
        db, state="active", last_seq=4, seeker_selected_mediums={"call": "9999999999"}
    )

    answer, outbox = await run(
        db,
        lambda s, o: service.select_mediums(
            s, o, session_id=session.session_id, seeker_id=SEEKER, mediums={"whatsapp": PHONE}
        ),
    )

    stored = await reload(db, session)
    assert (stored.connection_state, stored.seeker_selected_mediums) == (
        "active",
        {"whatsapp": PHONE},
    )
    assert [(e.seq, e.data["mediums"]) for e in answer.events] == [(5, {"whatsapp": PHONE})]
    assert len(outbox.messages) == 2


async def test_share_mediums_keeps_the_state(db: Database) -> None:
    session = await new_session(db, state="waiting")

    answer, outbox = await run(
        db,
        lambda s, o: service.share_mediums(
            s,
            o,
            session_id=session.session_id,
            provider_id=PROVIDER,
            mediums={"call": PHONE},
            now=NOW,
        ),
    )

    stored = await reload(db, session)
    assert (stored.connection_state, stored.provider_selected_mediums) == (
        "waiting",
        {"call": PHONE},
    )
    assert stored.seeker_selected_mediums is None
    data = {"mediums": {"call": PHONE}}
    assert_event_to_both(outbox, answer, session=session, seq=1, kind="mediums_shared", data=data)


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
    outbox = Outbox()

    with pytest.raises(SessionNotFound):
        async with db.transaction() as s:
            await service.select_mediums(
                s, outbox, session_id=session_id, seeker_id=who, mediums={}
            )

    assert (await reload(db, session)).connection_state == "waiting"
    assert not outbox


async def test_share_by_the_seeker_is_session_not_found(db: Database) -> None:
    session = await new_session(db)
    with pytest.raises(SessionNotFound):
        async with db.transaction() as s:
            await service.share_mediums(
                s, Outbox(), session_id=session.session_id, provider_id=SEEKER, mediums={}
            )


@pytest.mark.parametrize("state", ["cancelled", "completed"])
async def test_mediums_on_an_ended_session_are_invalid_state(db: Database, state: str) -> None:
    session = await new_session(db, state=state)
    outbox = Outbox()

    with pytest.raises(InvalidState):
        async with db.transaction() as s:
            await service.select_mediums(
                s, outbox, session_id=session.session_id, seeker_id=SEEKER, mediums={}
            )

    stored = await reload(db, session)
    assert (stored.connection_state, stored.seeker_selected_mediums) == (state, None)
    assert not outbox


# --- location ------------------------------------------------------------------------


async def locate(
    db: Database,
    session: WorkSession,
    *,
    lat: float,
    accuracy_m: float | None = 10.0,
    recorded_at: datetime | None = None,
) -> tuple[service.LocationResult, Outbox]:
    """A provider's fix, north of BASE on its meridian."""
    fix = Fix(lat=lat, lng=BASE_LNG, accuracy_m=accuracy_m, recorded_at=recorded_at)
    result, outbox = await run(
        db,
        lambda s, o: service.apply_location_update(
            s,
            o,
            session_id=session.session_id,
            user_id=PROVIDER,
            role="provider",
            fix=fix,
            rules=RULES,
            now=NOW,
        ),
    )
    assert isinstance(result, service.LocationResult)
    return result, outbox


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

    result, outbox = await locate(db, session, lat=north(1000), recorded_at=recorded)

    stored = await reload(db, session)
    assert (stored.provider_latitude, stored.provider_longitude) == (north(1000), BASE_LNG)
    assert stored.provider_last_location_update == NOW
    assert stored.provider_fix_recorded_at == recorded
    assert stored.seeker_latitude is None
    assert (stored.current_distance_meters, stored.last_distance_update) == (None, None)
    assert result.verdict is FixVerdict.ACCEPT
    assert result.answer == Answer(answers=False)
    assert not outbox


async def test_both_positions_known_send_distance_to_both(db: Database) -> None:
    session = await new_session(db, provider_latitude=north(1234.5), provider_longitude=BASE_LNG)

    answer, outbox = await run(
        db,
        lambda s, o: service.update_location(
            s,
            o,
            session_id=session.session_id,
            user_id=SEEKER,
            role="seeker",
            lat=BASE_LAT,
            lng=BASE_LNG,
            accuracy_m=None,
            recorded_at=None,
            rules=RULES,
            now=NOW,
        ),
    )

    frame = distance_frame(session, 1234.5, "1.2 km away")
    # No "skip": the sending socket learns the distance through the broker like the others.
    assert sent(outbox) == [(SEEKER_CH, frame), (PROVIDER_CH, frame)]
    assert answer == Answer(answers=False)
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

    _, outbox = await locate(db, session, lat=north(1049))

    assert not outbox
    stored = await reload(db, session)
    assert stored.provider_latitude == north(1049)  # the position is kept all the same
    assert stored.distance_provider_latitude == north(1000)
    assert stored.current_distance_meters == 1000.0


async def test_a_move_of_the_threshold_sends_an_update(db: Database) -> None:
    session = await new_session(
        db, **at(north(1000)), **baseline(north(1000)), current_distance_meters=1000.0
    )

    _, outbox = await locate(db, session, lat=north(1050.5))

    frame = distance_frame(session, 1050.5, "1.1 km away")
    assert sent(outbox) == [(SEEKER_CH, frame), (PROVIDER_CH, frame)]
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

    result, outbox = await locate(
        db, session, lat=lat, accuracy_m=accuracy_m, recorded_at=recorded_at
    )

    assert result.verdict is verdict
    assert result.answer == Answer(answers=False)
    assert not outbox
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

    result, outbox = await locate(db, session, lat=north(250))

    [event] = result.answer.events
    assert (event.seq, event.kind, event.data) == (3, "provider_nearby", {"distance_meters": 250.0})
    assert result.answer.answers is False
    assert [m for _, m in sent(outbox) if "event" in m] == [{"event": event.to_wire()}] * 2
    assert (await reload(db, session)).nearby_at == NOW

    again, outbox = await locate(db, session, lat=north(240))

    assert again.answer.events == ()
    assert not outbox  # and 10 m is no move worth a distance_update either
    assert await logged_kinds(db, session) == [(3, "provider_nearby")]


async def test_arrived_fires_once_even_without_a_distance_update(db: Database) -> None:
    # The baseline is 60 m; closing 25 m is below the 50 m move rule, so no distance_update
    # goes out, yet the provider has arrived.
    session = await new_session(db, **at(north(60)), **baseline(north(60)), nearby_at=NOW)

    result, outbox = await locate(db, session, lat=north(35))

    assert [(e.kind, e.data) for e in result.answer.events] == [
        ("provider_arrived", {"distance_meters": 35.0})
    ]
    assert [channel for channel, m in sent(outbox) if "event" in m] == [SEEKER_CH, PROVIDER_CH]
    assert not [m for _, m in sent(outbox) if "frame" in m]
    assert (await reload(db, session)).arrived_at == NOW

    again, outbox = await locate(db, session, lat=north(20))
    assert again.answer.events == ()
    assert not outbox
    assert await logged_kinds(db, session) == [(1, "provider_arrived")]


async def test_a_jump_to_20_m_fires_nearby_then_arrived(db: Database) -> None:
    session = await new_session(db, **at(north(2000)), **baseline(north(2000)))

    result, outbox = await locate(db, session, lat=north(20))

    assert [(e.seq, e.kind) for e in result.answer.events] == [
        (1, "provider_nearby"),
        (2, "provider_arrived"),
    ]
    types = [m["frame"]["type"] if "frame" in m else m["event"]["kind"] for _, m in sent(outbox)]
    assert types == ["distance_update"] * 2 + ["provider_nearby"] * 2 + ["provider_arrived"] * 2
    stored = await reload(db, session)
    assert (stored.nearby_at, stored.arrived_at) == (NOW, NOW)
    assert await logged_kinds(db, session) == [(1, "provider_nearby"), (2, "provider_arrived")]


# --- ending --------------------------------------------------------------------------


async def live_session_with_history(db: Database) -> WorkSession:
    """An active session with a message, a typing row, and both users made unavailable."""
    async with db.transaction() as s:
        session = await make_work_session(
            s, seeker_id=SEEKER, provider_id=PROVIDER, state="active", last_seq=3
        )
        await make_chat_message(s, session=session)
        s.add(
            TypingIndicator(
                session_id=session.id,
                user_id=SEEKER,
                user_type="seeker",
                is_typing=True,
                last_typing_at=NOW,
            )
        )
        s.add(ProviderActiveStatus(provider_id=PROVIDER, is_active=False))
        s.add(SeekerSearchPreference(seeker_id=SEEKER, is_searching=False))
    return session


async def ended_state(db: Database, session: WorkSession) -> dict[str, Any]:
    async with db.transaction() as s:
        order = await s.get(WorkOrder, session.work_order_id)
        expiry = (await s.execute(select(ChatMessage.expires_at))).scalars().all()
        typing = (await s.execute(select(TypingIndicator.is_typing))).scalars().all()
        active = await s.get(ProviderActiveStatus, PROVIDER)
        searching = await s.get(SeekerSearchPreference, SEEKER)
        assert order is not None
        assert active is not None
        assert searching is not None
        return {
            "order": order.status,
            "expiry": expiry,
            "typing": typing,
            "provider_active": active.is_active,
            "seeker_searching": searching.is_searching,
        }


@pytest.mark.parametrize(
    ("role", "user_id"),
    [("seeker", SEEKER), ("provider", PROVIDER), ("system", "ops-service")],
)
async def test_cancel(db: Database, role: str, user_id: str) -> None:
    session = await live_session_with_history(db)

    answer, outbox = await run(
        db,
        lambda s, o: service.cancel_session(
            s,
            o,
            session_id=session.session_id,
            user_id=user_id,
            role=role,  # type: ignore[arg-type]
            retention_hours=24,
            now=NOW,
        ),
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
        "typing": [False],
        "provider_active": True,
        "seeker_searching": True,
    }
    data = {"cancelled_by": role}
    assert_event_to_both(
        outbox, answer, session=session, seq=4, kind="connection_cancelled", data=data
    )


async def test_cancel_by_a_stranger_is_session_not_found(db: Database) -> None:
    session = await new_session(db)
    with pytest.raises(SessionNotFound):
        async with db.transaction() as s:
            await service.cancel_session(
                s,
                Outbox(),
                session_id=session.session_id,
                user_id="seeker-other",
                role="seeker",
                retention_hours=24,
            )
    assert (await reload(db, session)).connection_state == "waiting"


async def cancel(s: AsyncSession, o: Outbox, session: WorkSession) -> Answer:
    return await service.cancel_session(
        s, o, session_id=session.session_id, user_id=SEEKER, role="seeker", retention_hours=24
    )


async def complete(s: AsyncSession, o: Outbox, session: WorkSession) -> Answer:
    return await service.complete_session(
        s, o, session_id=session.session_id, provider_id=PROVIDER, retention_hours=24
    )


@pytest.mark.parametrize("first", [cancel, complete], ids=["cancelled", "completed"])
async def test_cancel_after_an_ending_is_invalid_state(
    db: Database, first: Callable[[AsyncSession, Outbox, WorkSession], Awaitable[Answer]]
) -> None:
    session = await new_session(db)
    await run(db, lambda s, o: first(s, o, session))
    outbox = Outbox()

    with pytest.raises(InvalidState):
        async with db.transaction() as s:
            await cancel(s, outbox, session)

    assert not outbox
    assert len(await logged_kinds(db, session)) == 1


async def test_cancel_racing_complete_leaves_exactly_one_outcome(db: Database) -> None:
    session = await live_session_with_history(db)
    # On PostgreSQL both transactions are open before either locks the row, so the second
    # really waits on FOR UPDATE. SQLite's single pooled connection serialises them anyway
    # (a barrier there would deadlock), which is the embedded mode's guarantee to check.
    barrier = asyncio.Barrier(2) if db.dialect == "postgresql" else None

    async def attempt(
        action: Callable[[AsyncSession, Outbox, WorkSession], Awaitable[Answer]],
    ) -> Outbox | None:
        outbox = Outbox()
        try:
            async with db.transaction() as s:
                await s.execute(text("SELECT 1"))
                if barrier is not None:
                    await barrier.wait()
                await action(s, outbox, session)
        except InvalidState:
            return None
        return outbox

    outcomes = await asyncio.gather(attempt(cancel), attempt(complete))

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

    answer, outbox = await run(
        db,
        lambda s, o: service.complete_session(
            s,
            o,
            session_id=session.session_id,
            provider_id=provider_id,
            retention_hours=24,
            now=NOW,
        ),
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
        "typing": [False],
        "provider_active": True,
        "seeker_searching": False,
    }
    assert_event_to_both(outbox, answer, session=session, seq=4, kind="session_completed", data={})


async def test_complete_by_the_seeker_is_session_not_found(db: Database) -> None:
    session = await new_session(db)
    with pytest.raises(SessionNotFound):
        async with db.transaction() as s:
            await service.complete_session(
                s, Outbox(), session_id=session.session_id, provider_id=SEEKER, retention_hours=24
            )
    assert (await reload(db, session)).connection_state == "waiting"


async def check_replay(db: Database, session: WorkSession, user_id: str = SEEKER) -> None:
    async with db.transaction() as s:
        await service.check_replay_allowed(
            s,
            session_id=session.session_id,
            user_id=user_id,
            role="seeker",
            retention_hours=24,
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
        snapshot = await service.snapshot_for(s, user_id=PROVIDER, role="provider")

    assert snapshot is not None
    frame = snapshot.to_frame_dict()
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
    }
    json.dumps(frame)  # plain JSON all the way down


async def test_snapshot_before_positions_and_chat(db: Database) -> None:
    await new_session(db)
    async with db.transaction() as s:
        snapshot = await service.snapshot_for(s, user_id=SEEKER, role="seeker")
    assert snapshot is not None
    assert (snapshot.your_role, snapshot.connection_state, snapshot.chat_room_id) == (
        "seeker",
        "waiting",
        None,
    )
    assert (snapshot.distance_meters, snapshot.distance_formatted) == (None, None)
    assert snapshot.to_frame_dict()["mediums"] == {"seeker": None, "provider": None}


async def test_no_snapshot_without_a_live_session(db: Database) -> None:
    await new_session(db, state="completed")
    async with db.transaction() as s:
        assert await service.snapshot_for(s, user_id=SEEKER, role="seeker") is None
        # The seeker's id in the provider role is someone else entirely.
        assert await service.snapshot_for(s, user_id=SEEKER, role="provider") is None


# --- distance tick -------------------------------------------------------------------


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

    outbox = Outbox()
    async with db.transaction() as s:
        count = await service.distance_tick(s, outbox, now=NOW, batch_size=batch_size)

    assert count == 2
    assert sent(outbox) == [
        ("ws:seeker:s1", distance_frame(near, 350.0, "350 meters away")),
        ("ws:provider:p1", distance_frame(near, 350.0, "350 meters away")),
        ("ws:seeker:s2", distance_frame(far, 12345.0, "12.3 km away")),
        ("ws:provider:p2", distance_frame(far, 12345.0, "12.3 km away")),
    ]
    # The tick writes nothing: the 50 m rule keeps comparing with the last real update.
    stored = await reload(db, near)
    assert (stored.current_distance_meters, stored.distance_provider_latitude) == (None, None)
