"""Who may act on a session, and how a decision records a change to one: the rules every
session-scoped command shares, written once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from worksession.errors import InvalidState, SessionNotFound
from worksession.eventlog.events import LoggedEvent, NewEvent, numbered
from worksession.pipeline.commands import Actor
from worksession.pipeline.rows import SessionRow, evolve


def session_of(session: SessionRow | None, actor: Actor | None) -> SessionRow:
    """The session if ``actor`` takes part in it (any session for ``None``, the internal
    API). A session that does not exist and one of somebody else are the same
    ``session_not_found``: ids are not confirmed to strangers."""
    if session is None or (actor is not None and session.participant(actor.role) != actor.user_id):
        raise SessionNotFound()
    return session


def live_session_of(session: SessionRow | None, actor: Actor | None) -> SessionRow:
    """:func:`session_of`, and the session must still be live (``invalid_state`` if not)."""
    session = session_of(session, actor)
    if not session.is_live:
        raise InvalidState()
    return session


def changed(session: SessionRow, now: datetime, **columns: Any) -> SessionRow:
    """``session`` with ``columns`` changed, as of ``now``."""
    return evolve(session, updated_at=now, **columns)


def logged(
    session: SessionRow, now: datetime, new: Sequence[NewEvent]
) -> tuple[SessionRow, tuple[LoggedEvent, ...]]:
    """``new`` appended to the session's log: the events with their seq, and the session
    with its ``last_seq`` moved past them."""
    if not new:
        return session, ()
    events = numbered(session.session_id, session.last_seq, new, now)
    return changed(session, now, last_seq=events[-1].seq), events
