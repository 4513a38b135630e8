"""How a live session ends (PROTOCOL 5 "Ending"), and how long its history stays readable.

Cancel and complete are decided on the locked session row, so a cancel racing a complete
(two frames, two devices, a frame and the internal API) leaves exactly one outcome: the
second finds the session ended and gets ``invalid_state``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from worksession.errors import InvalidState
from worksession.eventlog.events import NewEvent
from worksession.pipeline.commands import Actor, CancelSession, CompleteSession
from worksession.pipeline.decision import (
    ANSWERED_BY_EVENT,
    Decision,
    ExpireChat,
    FinishOrder,
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
