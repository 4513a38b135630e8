"""How a live session ends (PROTOCOL 5 "Ending"), and how long its history stays readable.

Cancel and complete are decided on the locked session row, so a cancel racing a complete
(two frames, two devices, a frame and the internal API) leaves exactly one outcome: the
second finds the session ended and gets ``invalid_state``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from worksession.errors import InvalidState, SessionNotFound
from worksession.eventlog.events import LoggedEvent, NewEvent
from worksession.pipeline.commands import (
    Actor,
    CancelAbandoned,
    CancelSession,
    CompleteSession,
    TouchSession,
)
from worksession.pipeline.decision import (
    ANSWERED_BY_EVENT,
    Decision,
    ExpireChat,
    FinishOrder,
    Notice,
    Observation,
    PutSession,
    SessionEnded,
    SetFlag,
    Write,
)
from worksession.pipeline.rows import SessionRow
from worksession.pipeline.world import World
from worksession.sessions.access import changed, live_session_of, logged
from worksession.sessions.states import SessionState, WorkOrderStatus

CancelledBy = Literal["seeker", "provider", "system"]


def decide_cancel(world: World, command: CancelSession, now: datetime) -> Decision:
    """Cancel a live session: the order too, its messages expire, both users available
    again. ``by=None`` is the internal API: any session, ``cancelled_by: "system"``."""
    by = command.by
    session = live_session_of(world.session(command.session_id), by)
    cancelled_by: CancelledBy = "system" if by is None else by.role
    session = changed(
        session,
        now,
        cancelled_by=cancelled_by,
        cancelled_by_id=None if by is None else by.user_id,
        cancelled_at=now,
    )
    return _end(
        world,
        session,
        SessionState.CANCELLED,
        ("connection_cancelled", {"cancelled_by": cancelled_by}),
        now,
        # The seeker searches again; after a completion they got what they searched for.
        SetFlag("seeker_searching", session.seeker_id, True),
    )


def decide_abandoned(world: World, command: CancelAbandoned, now: datetime) -> Decision:
    """Cancel, as the system, every one of these sessions still live and untouched for
    ``abandon_after``: exactly what the internal API's cancel does to it.

    "Touched" is the session row's ``updated_at``, which every frame a participant sends
    for the session moves: those the pipeline keeps (mediums, kept location fixes, chat,
    receipts) as they are written, typing and ``resume`` through :func:`decide_touch`;
    nothing else does (the distance ticker only reads). A fix dropped as noise, or a
    repeated receipt, writes nothing and does not count on its own.
    """
    idle_since = now - world.policy.abandon_after
    out: list[LoggedEvent | Notice] = []
    writes: list[Write] = []
    observations: list[Observation] = []
    for session_id in command.session_ids:
        session = world.session(session_id)
        if session is None or not session.is_live or session.updated_at > idle_since:
            continue
        cancel = decide_cancel(world, CancelSession(session_id, by=None), now)
        out.extend(cancel.out)
        writes.extend(cancel.writes)
        observations.extend(cancel.observations)
    # Nobody asked: no reply. The sessions are distinct and so are their users (one live
    # session each), so the cancels touch disjoint rows and can be decided on one world.
    return Decision(out=tuple(out), writes=tuple(writes), observations=tuple(observations))


def decide_touch(world: World, command: TouchSession, now: datetime) -> Decision:
    """A participant's sign of life in a live session: its ``updated_at`` moves, nothing
    else. Silent otherwise: the frame that caused it has been answered on its own terms."""
    try:
        session = live_session_of(world.session(command.session_id), command.actor)
    except (SessionNotFound, InvalidState):
        return Decision()
    return Decision(writes=(PutSession(changed(session, now)),))


def decide_complete(world: World, command: CompleteSession, now: datetime) -> Decision:
    """Complete a live session: the order too, its messages expire, the provider available
    again. ``provider_id=None`` is the internal API: any session."""
    actor = None if command.provider_id is None else Actor(command.provider_id, "provider")
    session = live_session_of(world.session(command.session_id), actor)
    session = changed(session, now, completed_at=now)
    return _end(world, session, SessionState.COMPLETED, ("session_completed", {}), now)


_ORDER_STATUS_AT_END = {
    SessionState.CANCELLED: WorkOrderStatus.CANCELLED,
    SessionState.COMPLETED: WorkOrderStatus.COMPLETED,
}


def _end(
    world: World,
    session: SessionRow,
    state: SessionState,
    event: NewEvent,
    now: datetime,
    *more: Write,
) -> Decision:
    """What cancel and complete share: state, order, message expiry, provider available."""
    session = changed(session, now, connection_state=state.value)
    session, events = logged(session, now, [event])
    # No typing_indicator frames: the terminal event closes every socket right after.
    return Decision(
        out=events,
        writes=(
            PutSession(session),
            FinishOrder(session.work_order_id, _ORDER_STATUS_AT_END[state].value),
            ExpireChat(session.session_id, now + world.policy.retention),
            SetFlag("provider_active", session.provider_id, True),
            *more,
        ),
        reply=ANSWERED_BY_EVENT,
        observations=(SessionEnded(state.value, session.created_at, now),),
    )


def check_replay_allowed(
    *, live: bool, ended_at: datetime | None, retention: timedelta, now: datetime
) -> None:
    """Raise unless a participant may still ``resume`` a session: it is live, or it ended
    less than ``retention`` ago (after that its history, chat included, is swept away)."""
    if not live and (ended_at is None or ended_at + retention <= now):
        raise InvalidState("The session's history has expired")
