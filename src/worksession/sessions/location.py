"""Location and distance (PROTOCOL 5): judging fixes, the 50 m rule, arrival, and the
periodic distance tick.

A fix is a command like any other, decided against the locked session row as the batch's
earlier fixes left it, and stored with the rest of its batch in one statement. It writes
no event of its own: ``distance_update`` is ephemeral, and only ``provider_nearby`` and
``provider_arrived`` are logged.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from worksession import geo
from worksession.errors import ValidationFailed
from worksession.eventlog.events import NewEvent
from worksession.eventlog.outbox import Outbox, Recipient
from worksession.pipeline.commands import ReportLocation
from worksession.pipeline.decision import (
    Decision,
    DistanceSent,
    FixDropped,
    Notice,
    Observation,
    PutSession,
)
from worksession.pipeline.rows import SessionRow
from worksession.pipeline.world import World
from worksession.protocol.outbound import DistanceUpdate, encode
from worksession.sessions.access import changed, live_session_of, logged
from worksession.sessions.schemas import LocationRules


def decide_fix(world: World, command: ReportLocation, now: datetime) -> Decision:
    """Keep a participant's fix unless it is noise; send distance and arrival as they
    become due.

    A dropped fix writes nothing and sends nothing (the observation says why, for the
    metrics). A kept fix without ``recorded_at`` clears the stored fix time, so the next
    fix is not judged for order or speed against a time that belongs to an older
    position. A fix has no answer of its own.
    """
    actor, fix = command.actor, command.fix
    _check(fix, now)
    session = live_session_of(world.session(command.session_id), actor)
    rules = world.policy.location
    verdict = geo.judge_fix(
        fix,
        _last_fix(session, actor.role),
        max_accuracy_m=rules.max_accuracy_m,
        max_speed_kmh=rules.max_speed_kmh,
    )
    if verdict is not geo.FixVerdict.ACCEPT:
        return Decision(observations=(FixDropped(verdict.value),))
    session = changed(
        session,
        now,
        **{
            f"{actor.role}_latitude": fix.lat,
            f"{actor.role}_longitude": fix.lng,
            f"{actor.role}_last_location_update": now,
            f"{actor.role}_fix_recorded_at": fix.recorded_at,
        },
    )
    distance = session.distance_m
    if distance is None:
        return Decision(writes=(PutSession(session),))
    notices: tuple[Notice, ...] = ()
    observations: tuple[Observation, ...] = ()
    if _moved_enough(session, rules):
        session = _baseline(session, distance, now)
        notices = (
            Notice(participants(session), distance_frame(session.session_id, distance, now)),
        )
        observations = (DistanceSent("move"),)
    # Arrival is judged on every kept fix, not only on those that move the distance
    # baseline: with the default thresholds (50 m move rule, 50 m arrival) a provider who
    # closes the last few tens of metres would otherwise never be announced as arrived.
    session, arrivals = _arrivals(session, distance, rules, now)
    session, events = logged(session, now, arrivals)
    return Decision(
        out=(*notices, *events), writes=(PutSession(session),), observations=observations
    )


def _check(fix: geo.Fix, now: datetime) -> None:
    """What makes a fix invalid rather than noisy (the gateway checks it when it parses the
    frame too, so that a bad frame is refused before anything is looked up)."""
    try:
        geo.validate_coordinates(fix.lat, fix.lng)
    except geo.InvalidCoordinates as exc:
        raise ValidationFailed(str(exc), details=[{"loc": ["lat/lng"], "msg": str(exc)}]) from None
    if fix.recorded_at is not None and geo.recorded_at_too_far_in_future(fix.recorded_at, now):
        msg = "recorded_at is more than 60 seconds ahead of the server's clock"
        raise ValidationFailed(msg, details=[{"loc": ["recorded_at"], "msg": msg}])


def participants(session: SessionRow) -> tuple[Recipient, Recipient]:
    return (("seeker", session.seeker_id), ("provider", session.provider_id))


def distance_frame(session_id: uuid.UUID, distance_m: float, now: datetime) -> DistanceUpdate:
    """The ephemeral ``distance_update`` frame (no seq), the same for both participants."""
    return DistanceUpdate(
        type="distance_update",
        session_id=str(session_id),
        distance_meters=round(distance_m, 1),
        distance_formatted=geo.format_distance(distance_m),
        updated_at=now,
    )


def _last_fix(session: SessionRow, role: str) -> geo.LastFix | None:
    position = session.position_of(role)
    if position is None:
        return None
    recorded_at = (
        session.seeker_fix_recorded_at if role == "seeker" else session.provider_fix_recorded_at
    )
    return geo.LastFix(lat=position.lat, lng=position.lng, recorded_at=recorded_at)


def _moved_enough(session: SessionRow, rules: LocationRules) -> bool:
    return geo.needs_distance_update(
        seeker=session.seeker_position,
        provider=session.provider_position,
        last_seeker=_point(session.distance_seeker_latitude, session.distance_seeker_longitude),
        last_provider=_point(
            session.distance_provider_latitude, session.distance_provider_longitude
        ),
        threshold_m=rules.move_threshold_m,
    )


def _point(lat: float | None, lng: float | None) -> geo.Position | None:
    return None if lat is None or lng is None else geo.Position(lat=lat, lng=lng)


def _baseline(session: SessionRow, distance_m: float, now: datetime) -> SessionRow:
    """The current positions become what the next movement-triggered update compares with."""
    return changed(
        session,
        now,
        current_distance_meters=distance_m,
        last_distance_update=now,
        distance_seeker_latitude=session.seeker_latitude,
        distance_seeker_longitude=session.seeker_longitude,
        distance_provider_latitude=session.provider_latitude,
        distance_provider_longitude=session.provider_longitude,
    )


def _arrivals(
    session: SessionRow, distance_m: float, rules: LocationRules, now: datetime
) -> tuple[SessionRow, list[NewEvent]]:
    """provider_nearby and provider_arrived, each the first time its threshold is reached."""
    data: dict[str, Any] = {"distance_meters": round(distance_m, 1)}
    due: list[NewEvent] = []
    if distance_m <= rules.nearby_m and session.nearby_at is None:
        session = changed(session, now, nearby_at=now)
        due.append(("provider_nearby", data))
    if distance_m <= rules.arrived_m and session.arrived_at is None:
        session = changed(session, now, arrived_at=now)
        due.append(("provider_arrived", dict(data)))
    return session, due


# --- the periodic tick -------------------------------------------------------------------


class LivePositions(NamedTuple):
    """What the tick reads of a live session whose two positions are known."""

    id: int
    session_id: uuid.UUID
    seeker_id: str
    provider_id: str
    seeker_latitude: float
    seeker_longitude: float
    provider_latitude: float
    provider_longitude: float


def tick_outbox(page: Sequence[LivePositions], now: datetime) -> Outbox:
    """A fresh ``distance_update`` for both participants of each session of ``page``,
    encoded once per session (both get the same bytes).

    Read-only by design: the tick does not move the ``distance_*`` baseline. The 50 m rule
    compares against the positions of the last movement-triggered update, and a periodic
    refresh is not a movement.
    """
    outbox = Outbox()
    for row in page:
        distance = geo.haversine_m(
            row.seeker_latitude, row.seeker_longitude, row.provider_latitude, row.provider_longitude
        )
        outbox.frame(
            (("seeker", row.seeker_id), ("provider", row.provider_id)),
            encode(distance_frame(row.session_id, distance, now)),
        )
    return outbox
