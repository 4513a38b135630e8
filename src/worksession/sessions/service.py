"""The live session: mediums, location and distance, its two endings, and the snapshot a
reconnecting client gets (PROTOCOL 5 and 6).

Every writer locks the session row first (``SELECT ... FOR UPDATE``), so two frames of one
session, or a cancel racing a complete, are applied one after the other and the second
sees the first's outcome.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy.ext.asyncio import AsyncSession

from worksession import geo
from worksession.availability import service as availability
from worksession.errors import InvalidState, SessionNotFound, ValidationFailed
from worksession.kit import cursor
from worksession.kit.clock import isoformat_z, utcnow
from worksession.models import WorkSession
from worksession.ops import metrics
from worksession.outbox import Outbox
from worksession.sessions import events, repository
from worksession.sessions.events import Answer, LoggedEvent
from worksession.sessions.schemas import (
    LiveState,
    LocationRules,
    Position,
    SessionDetail,
    SessionPage,
    SessionPositions,
    SessionSnapshot,
    SessionStateName,
    SnapshotMediums,
)
from worksession.sessions.states import SessionState, WorkOrderStatus, can_transition, is_live

logger = logging.getLogger(__name__)

Participant = Literal["seeker", "provider"]
CancelledBy = Literal["seeker", "provider", "system"]

_NO_ANSWER = Answer(answers=False)

_ORDER_STATUS_AT_END = {
    SessionState.CANCELLED: WorkOrderStatus.CANCELLED,
    SessionState.COMPLETED: WorkOrderStatus.COMPLETED,
}


@dataclass(frozen=True, slots=True)
class LocationResult:
    """The outcome of one fix: ``verdict`` feeds the dropped-fix metrics, ``answer`` the socket."""

    verdict: geo.FixVerdict
    answer: Answer


# --- mediums -------------------------------------------------------------------------


async def select_mediums(
    db: AsyncSession,
    outbox: Outbox,
    *,
    session_id: uuid.UUID,
    seeker_id: str,
    mediums: dict[str, str],
    now: datetime | None = None,
) -> Answer:
    """The seeker's mediums (already normalised); the first selection, even empty, activates."""
    now = now or utcnow()
    session = await _lock_live(db, session_id=session_id, user_id=seeker_id, role="seeker")
    session.seeker_selected_mediums = dict(mediums)
    session.mediums_shared_at = now
    if can_transition(SessionState(session.connection_state), SessionState.ACTIVE):
        session.connection_state = SessionState.ACTIVE.value
    data = {"mediums": dict(mediums), "connection_state": SessionState.ACTIVE.value}
    return Answer(events=await _log(db, outbox, session, [("mediums_selected", data)], now))


async def share_mediums(
    db: AsyncSession,
    outbox: Outbox,
    *,
    session_id: uuid.UUID,
    provider_id: str,
    mediums: dict[str, str],
    now: datetime | None = None,
) -> Answer:
    """The provider's mediums (already normalised), replacing any earlier share."""
    now = now or utcnow()
    session = await _lock_live(db, session_id=session_id, user_id=provider_id, role="provider")
    session.provider_selected_mediums = dict(mediums)
    data = {"mediums": dict(mediums)}
    return Answer(events=await _log(db, outbox, session, [("mediums_shared", data)], now))


# --- location and distance -----------------------------------------------------------


async def update_location(
    db: AsyncSession,
    outbox: Outbox,
    *,
    session_id: uuid.UUID,
    user_id: str,
    role: Participant,
    lat: float,
    lng: float,
    accuracy_m: float | None,
    recorded_at: datetime | None,
    rules: LocationRules,
    now: datetime | None = None,
) -> Answer:
    """A participant's location fix; see :func:`apply_location_update`, which also says
    whether the fix was kept (for metrics)."""
    result = await apply_location_update(
        db,
        outbox,
        session_id=session_id,
        user_id=user_id,
        role=role,
        fix=geo.Fix(lat=lat, lng=lng, accuracy_m=accuracy_m, recorded_at=recorded_at),
        rules=rules,
        now=now,
    )
    return result.answer


async def apply_location_update(
    db: AsyncSession,
    outbox: Outbox,
    *,
    session_id: uuid.UUID,
    user_id: str,
    role: Participant,
    fix: geo.Fix,
    rules: LocationRules,
    now: datetime | None = None,
) -> LocationResult:
    """Keep a participant's fix unless it is noise; send distance and arrival as they become due.

    A dropped fix writes nothing and answers nothing (``verdict`` says why). A kept fix
    without ``recorded_at`` clears the stored fix time, so the next fix is not judged for
    order or speed against a time that belongs to an older position. The answer never
    acknowledges the frame: a location update has no ack.
    """
    now = now or utcnow()
    _check_fix(fix, now)
    session = await _lock_live(db, session_id=session_id, user_id=user_id, role=role)
    verdict = geo.judge_fix(
        fix,
        _last_fix(session, role),
        max_accuracy_m=rules.max_accuracy_m,
        max_speed_kmh=rules.max_speed_kmh,
    )
    if verdict is not geo.FixVerdict.ACCEPT:
        metrics.fix_dropped(verdict.value)
        return LocationResult(verdict=verdict, answer=_NO_ANSWER)
    _store_fix(session, role, fix, now)
    seeker, provider = _seeker_position(session), _provider_position(session)
    if seeker is None or provider is None:
        return LocationResult(verdict=verdict, answer=_NO_ANSWER)
    distance = geo.distance_between(seeker, provider)
    if geo.needs_distance_update(
        seeker=seeker,
        provider=provider,
        last_seeker=_position(session.distance_seeker_latitude, session.distance_seeker_longitude),
        last_provider=_position(
            session.distance_provider_latitude, session.distance_provider_longitude
        ),
        threshold_m=rules.move_threshold_m,
    ):
        _record_distance(session, seeker, provider, distance, now)
        _send_distance(
            outbox,
            session_id=session.session_id,
            seeker_id=session.seeker_id,
            provider_id=session.provider_id,
            distance_m=distance,
            now=now,
        )
        metrics.distance_updates("move")
    # Arrival is judged on every kept fix, not only on those that move the distance
    # baseline: with the default thresholds (50 m move rule, 50 m arrival) a provider who
    # closes the last few tens of metres would otherwise never be announced as arrived.
    arrivals = _arrival_events(session, distance, rules, now)
    logged = await _log(db, outbox, session, arrivals, now)
    return LocationResult(verdict=verdict, answer=Answer(events=logged, answers=False))


def distance_update_frame(
    session_id: uuid.UUID, distance_m: float, now: datetime
) -> dict[str, Any]:
    """The ephemeral ``distance_update`` frame (no seq), the same for both participants."""
    return {
        "type": "distance_update",
        "session_id": str(session_id),
        "distance_meters": round(distance_m, 1),
        "distance_formatted": geo.format_distance(distance_m),
        "updated_at": isoformat_z(now),
    }


async def distance_tick(
    db: AsyncSession, outbox: Outbox, *, now: datetime | None = None, batch_size: int = 500
) -> int:
    """Send a fresh ``distance_update`` to both participants of every live session whose two
    positions are known, in one transaction; returns how many sessions got one.

    The scheduler runs :func:`distance_tick_batch` instead, one short transaction per batch,
    so that a tick over 10,000 sessions never holds a connection (on SQLite: *the*
    connection) for the whole run.
    """
    now = now or utcnow()
    sent, after_id = 0, 0
    while True:
        count, after_id = await distance_tick_batch(
            db, outbox, after_id=after_id, batch_size=batch_size, now=now
        )
        sent += count
        if count < batch_size:
            return sent
        await asyncio.sleep(0)


async def distance_tick_batch(
    db: AsyncSession,
    outbox: Outbox,
    *,
    after_id: int,
    batch_size: int = 500,
    now: datetime | None = None,
) -> tuple[int, int]:
    """One keyset page (``id > after_id``) of the periodic distance update; returns the
    number of sessions in it and the id to continue after.

    Read-only by design: the tick does not move the ``distance_*`` baseline. The 50 m rule
    compares against the positions of the last movement-triggered update, and a periodic
    refresh is not a movement; writing nothing keeps a tick at one narrow read per batch.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    now = now or utcnow()
    page = await repository.live_sessions_with_positions(db, after_id=after_id, limit=batch_size)
    for row in page:
        distance = geo.haversine_m(
            row.seeker_latitude,
            row.seeker_longitude,
            row.provider_latitude,
            row.provider_longitude,
        )
        _send_distance(
            outbox,
            session_id=row.session_id,
            seeker_id=row.seeker_id,
            provider_id=row.provider_id,
            distance_m=distance,
            now=now,
        )
    metrics.distance_updates("tick", len(page))
    return len(page), (page[-1].id if page else after_id)


# --- ending --------------------------------------------------------------------------


async def cancel_session(
    db: AsyncSession,
    outbox: Outbox,
    *,
    session_id: uuid.UUID,
    user_id: str | None,
    role: CancelledBy,
    retention_hours: float,
    now: datetime | None = None,
) -> Answer:
    """Cancel a live session: the order too, messages expire, both users available again.

    ``role="system"`` is the internal API: any session, no participant check.
    """
    now = now or utcnow()
    if role == "system":
        session = await repository.lock_session(db, session_id=session_id)
    elif user_id is None:
        raise ValueError("a participant's cancel needs its user_id")
    else:
        session = await repository.lock_session_for(
            db, session_id=session_id, user_id=user_id, role=role
        )
    session = _may_move(session, SessionState.CANCELLED)
    session.cancelled_by = role
    session.cancelled_by_id = user_id
    session.cancelled_at = now
    await _end(db, session, SessionState.CANCELLED, retention_hours, now)
    await availability.set_seeker_searching(db, session.seeker_id, True, now=now)
    logged = await _log(
        db, outbox, session, [("connection_cancelled", {"cancelled_by": role})], now
    )
    return Answer(events=logged)


async def complete_session(
    db: AsyncSession,
    outbox: Outbox,
    *,
    session_id: uuid.UUID,
    provider_id: str | None,
    retention_hours: float,
    now: datetime | None = None,
) -> Answer:
    """Complete a live session: the order too, messages expire, the provider available again
    (the seeker's searching stays off: they got what they searched for).

    ``provider_id=None`` is the internal API: any session, no participant check.
    """
    now = now or utcnow()
    if provider_id is None:
        session = await repository.lock_session(db, session_id=session_id)
    else:
        session = await repository.lock_session_for(
            db, session_id=session_id, user_id=provider_id, role="provider"
        )
    session = _may_move(session, SessionState.COMPLETED)
    session.completed_at = now
    await _end(db, session, SessionState.COMPLETED, retention_hours, now)
    logged = await _log(db, outbox, session, [("session_completed", {})], now)
    return Answer(events=logged)


async def check_replay_allowed(
    db: AsyncSession,
    *,
    session_id: uuid.UUID,
    user_id: str,
    role: Participant,
    retention_hours: float,
    now: datetime | None = None,
) -> None:
    """Raise unless ``user_id`` may ``resume`` this session: live, or ended less than
    ``retention_hours`` ago (after that its history, chat included, is swept away)."""
    now = now or utcnow()
    session = await repository.session_for(db, session_id=session_id, user_id=user_id, role=role)
    if session is None:
        raise SessionNotFound()
    ended_at = session.cancelled_at or session.completed_at
    if not is_live(SessionState(session.connection_state)) and (
        ended_at is None or ended_at + timedelta(hours=retention_hours) <= now
    ):
        raise InvalidState("The session's history has expired")


# --- snapshot ------------------------------------------------------------------------


async def snapshot_for(
    db: AsyncSession, *, user_id: str, role: Participant, now: datetime | None = None
) -> SessionSnapshot | None:
    """The user's live session as ``connected.session`` shows it, or None.

    The distance is computed from the two latest positions, not taken from the last
    movement-triggered update: it is what the next tick would say. ``now`` is accepted for
    symmetry with the other services; nothing in a snapshot depends on the clock.
    """
    del now
    session = await repository.live_session_of(db, user_id=user_id, role=role)
    if session is None:
        return None
    seeker, provider = _seeker_position(session), _provider_position(session)
    distance = (
        None if seeker is None or provider is None else geo.distance_between(seeker, provider)
    )
    return SessionSnapshot(
        session_id=str(session.session_id),
        work_id=session.work_order_id,
        connection_state=cast(LiveState, session.connection_state),
        your_role=role,
        chat_room_id=None if session.chat_room_id is None else str(session.chat_room_id),
        mediums=SnapshotMediums(
            seeker=session.seeker_selected_mediums, provider=session.provider_selected_mediums
        ),
        distance_meters=None if distance is None else round(distance, 1),
        distance_formatted=None if distance is None else geo.format_distance(distance),
        last_seq=session.last_seq,
    )


# --- helpers -------------------------------------------------------------------------


async def _lock_live(
    db: AsyncSession, *, session_id: uuid.UUID, user_id: str, role: Participant
) -> WorkSession:
    session = await repository.lock_session_for(
        db, session_id=session_id, user_id=user_id, role=role
    )
    if session is None:
        raise SessionNotFound()
    if not is_live(SessionState(session.connection_state)):
        raise InvalidState()
    return session


def _may_move(session: WorkSession | None, new: SessionState) -> WorkSession:
    """The locked session if it may move to ``new``; a second ending is ``invalid_state``."""
    if session is None:
        raise SessionNotFound()
    if not can_transition(SessionState(session.connection_state), new):
        raise InvalidState()
    return session


async def _end(
    db: AsyncSession,
    session: WorkSession,
    state: SessionState,
    retention_hours: float,
    now: datetime,
) -> None:
    """What cancel and complete share: state, order, message expiry, typing, provider."""
    session.connection_state = state.value
    metrics.session_ended(state.value, started_at=session.created_at, ended_at=now)
    if not await repository.finish_work_order(
        db, work_order_id=session.work_order_id, status=_ORDER_STATUS_AT_END[state].value
    ):
        # The session is the record of truth for its own end; an order moved elsewhere
        # (by hand, or a bug) must not keep the participants stuck in a live session.
        logger.warning(
            "work order %s was not 'accepted' when its session ended", session.work_order_id
        )
    await repository.expire_messages_of_session(
        db, session_pk=session.id, expires_at=now + timedelta(hours=retention_hours)
    )
    # No typing_indicator frames: the terminal event closes every socket right after.
    await repository.stop_typing_in_session(db, session_pk=session.id)
    await availability.set_provider_active(db, session.provider_id, True, now=now)


async def _log(
    db: AsyncSession,
    outbox: Outbox,
    session: WorkSession,
    new_events: list[tuple[str, dict[str, Any]]],
    now: datetime,
) -> tuple[LoggedEvent, ...]:
    """Append to the session's log and queue each event for both participants."""
    logged = await events.append(
        db, session_pk=session.id, session_id=session.session_id, events=new_events, now=now
    )
    for event in logged:
        outbox.event(event, seeker_id=session.seeker_id, provider_id=session.provider_id)
    return tuple(logged)


def _check_fix(fix: geo.Fix, now: datetime) -> None:
    try:
        geo.validate_coordinates(fix.lat, fix.lng)
    except geo.InvalidCoordinates as exc:
        raise ValidationFailed(str(exc), details=[{"loc": ["lat/lng"], "msg": str(exc)}]) from None
    if fix.recorded_at is not None and geo.recorded_at_too_far_in_future(fix.recorded_at, now):
        msg = "recorded_at is more than 60 seconds ahead of the server's clock"
        raise ValidationFailed(msg, details=[{"loc": ["recorded_at"], "msg": msg}])


def _position(lat: float | None, lng: float | None) -> geo.Position | None:
    return None if lat is None or lng is None else geo.Position(lat=lat, lng=lng)


def _seeker_position(session: WorkSession) -> geo.Position | None:
    return _position(session.seeker_latitude, session.seeker_longitude)


def _provider_position(session: WorkSession) -> geo.Position | None:
    return _position(session.provider_latitude, session.provider_longitude)


def _last_fix(session: WorkSession, role: Participant) -> geo.LastFix | None:
    if role == "seeker":
        position, recorded_at = _seeker_position(session), session.seeker_fix_recorded_at
    else:
        position, recorded_at = _provider_position(session), session.provider_fix_recorded_at
    if position is None:
        return None
    return geo.LastFix(lat=position.lat, lng=position.lng, recorded_at=recorded_at)


def _store_fix(session: WorkSession, role: Participant, fix: geo.Fix, now: datetime) -> None:
    columns = {
        "latitude": fix.lat,
        "longitude": fix.lng,
        "last_location_update": now,
        "fix_recorded_at": fix.recorded_at,
    }
    for column, value in columns.items():
        setattr(session, f"{role}_{column}", value)


def _record_distance(
    session: WorkSession,
    seeker: geo.Position,
    provider: geo.Position,
    distance_m: float,
    now: datetime,
) -> None:
    """Make these positions the baseline the next movement-triggered update compares with."""
    session.current_distance_meters = distance_m
    session.last_distance_update = now
    session.distance_seeker_latitude = seeker.lat
    session.distance_seeker_longitude = seeker.lng
    session.distance_provider_latitude = provider.lat
    session.distance_provider_longitude = provider.lng


def _send_distance(
    outbox: Outbox,
    *,
    session_id: uuid.UUID,
    seeker_id: str,
    provider_id: str,
    distance_m: float,
    now: datetime,
) -> None:
    # No skip_origin: the sender's own other devices, and the sending socket itself, learn
    # the distance only through the broker.
    frame = distance_update_frame(session_id, distance_m, now)
    outbox.frame("seeker", seeker_id, frame)
    outbox.frame("provider", provider_id, frame)


def _arrival_events(
    session: WorkSession, distance_m: float, rules: LocationRules, now: datetime
) -> list[tuple[str, dict[str, Any]]]:
    """provider_nearby and provider_arrived, each the first time its threshold is reached."""
    data = {"distance_meters": round(distance_m, 1)}
    due: list[tuple[str, dict[str, Any]]] = []
    if distance_m <= rules.nearby_m and session.nearby_at is None:
        session.nearby_at = now
        due.append(("provider_nearby", data))
    if distance_m <= rules.arrived_m and session.arrived_at is None:
        session.arrived_at = now
        due.append(("provider_arrived", dict(data)))
    return due


# --- internal lookup -----------------------------------------------------------------

SESSION_CURSOR_KIND = "s1"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


def encode_session_cursor(session_pk: int) -> str:
    """The opaque cursor of the session lookup: ``["s1", <row id>]`` (see ``kit/cursor.py``).

    The row id, not the UUID: pages are keyset pages on the primary key, newest first, so
    sessions created between two requests never shift a page.
    """
    return cursor.encode(SESSION_CURSOR_KIND, session_pk)


def decode_session_cursor(text: str) -> int:
    """The row id a lookup cursor carries; raises ``kit.cursor.InvalidCursor``."""
    (session_pk,) = cursor.decode(SESSION_CURSOR_KIND, text, arity=1)
    return session_pk


async def get_session_detail(db: AsyncSession, session_id: uuid.UUID) -> SessionDetail:
    """The whole session, participants included (internal API); ``SessionNotFound`` if none."""
    session = await repository.session_by_id(db, session_id=session_id)
    if session is None:
        raise SessionNotFound()
    return _detail(session)


async def find_sessions(
    db: AsyncSession,
    *,
    user_id: str | None = None,
    state: SessionStateName | None = None,
    before_pk: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> SessionPage:
    """Sessions newest first, with ``user_id`` in either role and in ``state`` when given;
    ``before_pk`` is a decoded cursor. One row beyond ``limit`` is read to know whether
    another page exists, so the last page has no cursor."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be within 1..{MAX_PAGE_SIZE}")
    rows = await repository.find_sessions(
        db, user_id=user_id, state=state, before_id=before_pk, limit=limit + 1
    )
    page = rows[:limit]
    more = len(rows) > limit
    return SessionPage(
        sessions=[_detail(s) for s in page],
        next_cursor=encode_session_cursor(page[-1].id) if more else None,
    )


def _fix(
    lat: float | None, lng: float | None, updated_at: datetime | None, recorded_at: datetime | None
) -> Position | None:
    if lat is None or lng is None:
        return None
    return Position(lat=lat, lng=lng, updated_at=updated_at, recorded_at=recorded_at)


def _detail(session: WorkSession) -> SessionDetail:
    seeker, provider = _seeker_position(session), _provider_position(session)
    distance = (
        None if seeker is None or provider is None else geo.distance_between(seeker, provider)
    )
    return SessionDetail(
        session_id=session.session_id,
        work_id=session.work_order_id,
        seeker_id=session.seeker_id,
        provider_id=session.provider_id,
        state=cast(SessionStateName, session.connection_state),
        chat_room_id=session.chat_room_id,
        mediums=SnapshotMediums(
            seeker=session.seeker_selected_mediums, provider=session.provider_selected_mediums
        ),
        positions=SessionPositions(
            seeker=_fix(
                session.seeker_latitude,
                session.seeker_longitude,
                session.seeker_last_location_update,
                session.seeker_fix_recorded_at,
            ),
            provider=_fix(
                session.provider_latitude,
                session.provider_longitude,
                session.provider_last_location_update,
                session.provider_fix_recorded_at,
            ),
        ),
        distance_meters=None if distance is None else round(distance, 1),
        distance_formatted=None if distance is None else geo.format_distance(distance),
        nearby_at=session.nearby_at,
        arrived_at=session.arrived_at,
        chat_started_at=session.chat_started_at,
        mediums_shared_at=session.mediums_shared_at,
        cancelled_by=cast(CancelledBy | None, session.cancelled_by),
        cancelled_at=session.cancelled_at,
        completed_at=session.completed_at,
        created_at=session.created_at,
        updated_at=session.updated_at,
        last_seq=session.last_seq,
    )
