"""What the service tells about sessions without changing them: the snapshot a reconnecting
client gets (PROTOCOL 6), whether a session may still be replayed, and the internal API's
lookups (PROTOCOL 7)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, cast

from sqlalchemy.ext.asyncio import AsyncSession

from worksession import geo
from worksession.errors import SessionNotFound
from worksession.kit import cursor
from worksession.kit.clock import utcnow
from worksession.models import WorkSession
from worksession.pipeline.commands import Actor
from worksession.pipeline.rows import SessionRow
from worksession.sessions import repository
from worksession.sessions.access import live_session_of
from worksession.sessions.lifecycle import check_replay_allowed
from worksession.sessions.schemas import (
    LiveState,
    Position,
    SessionDetail,
    SessionPage,
    SessionPositions,
    SessionSnapshot,
    SessionStateName,
    SnapshotMediums,
)
from worksession.sessions.states import SessionState, is_live

Participant = Literal["seeker", "provider"]
CancelledBy = Literal["seeker", "provider", "system"]


async def live_session_for(db: AsyncSession, session_id: uuid.UUID, actor: Actor) -> SessionRow:
    """The live session ``actor`` takes part in, read without a lock, or the error the
    pipeline's commands would get (``session_not_found``, ``invalid_state``)."""
    return live_session_of(await repository.session_row(db, session_id), actor)


async def replay_allowed(
    db: AsyncSession,
    *,
    session_id: uuid.UUID,
    user_id: str,
    role: Participant,
    retention: timedelta,
    now: datetime | None = None,
) -> None:
    """Raise unless ``user_id`` may ``resume`` this session (see ``check_replay_allowed``)."""
    session = await repository.session_for(db, session_id=session_id, user_id=user_id, role=role)
    if session is None:
        raise SessionNotFound()
    check_replay_allowed(
        live=is_live(SessionState(session.connection_state)),
        ended_at=session.cancelled_at or session.completed_at,
        retention=retention,
        now=now or utcnow(),
    )


@dataclass(frozen=True, slots=True)
class LiveView:
    """The user's live session as the database knows it, and who the other participant
    is (the snapshot never names them: presence is looked up by the caller)."""

    snapshot: SessionSnapshot
    """With ``peer_online`` false: the database cannot tell; see :meth:`with_presence`."""
    peer_role: Participant
    peer_id: str

    def with_presence(self, peer_online: bool) -> SessionSnapshot:
        return self.snapshot.model_copy(update={"peer_online": peer_online})


async def live_view_for(db: AsyncSession, *, user_id: str, role: Participant) -> LiveView | None:
    """The user's live session and its other participant, or None."""
    session = await repository.live_session_of(db, user_id=user_id, role=role)
    if session is None:
        return None
    if role == "seeker":
        return LiveView(_snapshot(session, role), "provider", session.provider_id)
    return LiveView(_snapshot(session, role), "seeker", session.seeker_id)


async def snapshot_for(
    db: AsyncSession, *, user_id: str, role: Participant, now: datetime | None = None
) -> SessionSnapshot | None:
    """The user's live session as ``connected.session`` shows it, or None; ``peer_online``
    is false (only :func:`live_view_for`'s caller can ask the broker).

    The distance is computed from the two latest positions, not taken from the last
    movement-triggered update: it is what the next tick would say. ``now`` is accepted for
    symmetry with the other services; nothing in a snapshot depends on the clock.
    """
    del now
    view = await live_view_for(db, user_id=user_id, role=role)
    return None if view is None else view.snapshot


def _snapshot(session: WorkSession, role: Participant) -> SessionSnapshot:
    distance = _distance(session)
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
        peer_online=False,
    )


def _position(lat: float | None, lng: float | None) -> geo.Position | None:
    return None if lat is None or lng is None else geo.Position(lat=lat, lng=lng)


def _distance(session: WorkSession) -> float | None:
    seeker = _position(session.seeker_latitude, session.seeker_longitude)
    provider = _position(session.provider_latitude, session.provider_longitude)
    return None if seeker is None or provider is None else geo.distance_between(seeker, provider)


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
    (session_pk,) = cursor.decode(SESSION_CURSOR_KIND, text, arity=1, maxima=(cursor.MAX_INT4,))
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
    distance = _distance(session)
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
