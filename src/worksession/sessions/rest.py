"""REST for sessions (PROTOCOL 7): the participant API and the internal session API.

``participant_router`` (seeker and provider tokens): the caller's live session and the chat
history of a session they took part in. ``internal_router`` (service tokens): the whole
session, its chat (for moderation), a lookup by participant and state, and the two endings.

Both listings page with opaque cursors (the format is in ``kit/cursor.py``, the history's
keyset in ``chat/history.py``). A cursor that does not decode is a 422 in FastAPI's own
error shape, located at the query parameter, like every other bad parameter. A session
that does not exist and one the caller does not take part in are the same 404.

The internal endings are the very commands of the WebSocket path, with no participant
(``cancelled_by: "system"``), so both participants get the same ``connection_cancelled`` /
``session_completed`` and their sockets close with 1000.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, status
from fastapi.exceptions import RequestValidationError

from worksession.chat import history
from worksession.errors import SessionNotFound
from worksession.kit.cursor import MAX_CURSOR_CHARS, InvalidCursor
from worksession.kit.jwt import Claims
from worksession.pipeline.commands import CancelSession, Command, CompleteSession
from worksession.rest_auth import AUTH_RESPONSES, ErrorDetail, ParticipantCaller, ServiceCaller
from worksession.sessions import lookup as service
from worksession.sessions.schemas import (
    USER_ID_CHARS,
    USER_ID_MAX_CHARS,
    SessionDetail,
    SessionPage,
    SessionSnapshot,
    SessionStateName,
)
from worksession.state import AppState, get_state

participant_router = APIRouter(prefix="/v1", tags=["participant"], responses=AUTH_RESPONSES)
internal_router = APIRouter(prefix="/internal/v1", tags=["internal"], responses=AUTH_RESPONSES)

State = Annotated[AppState, Depends(get_state)]
SessionIdPath = Annotated[uuid.UUID, Path(description="The session's UUID.")]

_T = TypeVar("_T")

SESSION_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    status.HTTP_404_NOT_FOUND: {
        "model": ErrorDetail,
        "description": "No such session (for a participant: or not one of theirs)",
    }
}
ALREADY_ENDED: Final[dict[int | str, dict[str, Any]]] = {
    status.HTTP_409_CONFLICT: {
        "model": ErrorDetail,
        "description": "The session has already ended (cancelled or completed)",
    }
}


def participant_role(caller: Claims) -> Literal["seeker", "provider"]:
    # ParticipantCaller admits only these two; narrowed here for the type checker.
    if caller.user_type == "service":
        raise AssertionError("ParticipantCaller admitted a service token")
    return caller.user_type


def decoded_cursor(decode: Callable[[str], _T], value: str | None, parameter: str) -> _T | None:
    """A cursor parameter decoded, or a 422 shaped like FastAPI's own validation errors."""
    if value is None:
        return None
    try:
        return decode(value)
    except InvalidCursor as exc:
        error = {"type": "value_error", "loc": ("query", parameter), "msg": str(exc)}
        raise RequestValidationError([error]) from None


# --- participant API -----------------------------------------------------------------


@participant_router.get(
    "/me/session",
    response_model=SessionSnapshot,
    summary="The caller's live session",
    description="The same snapshot as `connected.session` on the WebSocket.",
    responses={
        status.HTTP_404_NOT_FOUND: {
            "model": ErrorDetail,
            "description": "The caller has no live session",
        }
    },
)
async def my_session(caller: ParticipantCaller, state: State) -> SessionSnapshot:
    async with state.db.transaction() as db:
        view = await service.live_view_for(db, user_id=caller.sub, role=participant_role(caller))
    if view is None:
        raise SessionNotFound("You have no live session")
    return view.with_presence(await state.presence.is_online(view.peer_role, view.peer_id))


BeforeQuery = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_CHARS,
        description="The `next_cursor` of the previous page; absent for the newest page.",
    ),
]
LimitQuery = Annotated[int, Query(ge=1, le=history.MAX_LIMIT, description="Messages per page.")]


@participant_router.get(
    "/sessions/{session_id}/messages",
    response_model=history.HistoryPage,
    summary="Chat history of one of the caller's sessions, newest first",
    description="Messages of a session the caller took part in (live or ended), until they "
    "expire. Senders are named by `sender_type` only.",
    responses=SESSION_NOT_FOUND,
)
async def session_messages(
    session_id: SessionIdPath,
    caller: ParticipantCaller,
    state: State,
    before: BeforeQuery = None,
    limit: LimitQuery = history.DEFAULT_LIMIT,
) -> history.HistoryPage:
    cursor = decoded_cursor(history.HistoryCursor.decode, before, "before")
    async with state.db.transaction() as db:
        return await history.history_page(
            db,
            session_id=session_id,
            user_id=caller.sub,
            role=participant_role(caller),
            before=cursor,
            limit=limit,
        )


# --- internal API --------------------------------------------------------------------


@internal_router.get(
    "/sessions/{session_id}",
    response_model=SessionDetail,
    summary="The whole session, participants included",
    responses=SESSION_NOT_FOUND,
)
async def get_session(
    session_id: SessionIdPath, _caller: ServiceCaller, state: State
) -> SessionDetail:
    async with state.db.transaction() as db:
        return await service.get_session_detail(db, session_id)


@internal_router.get(
    "/sessions/{session_id}/messages",
    response_model=history.HistoryPage,
    summary="The chat of any session, newest first (moderation, abuse reports)",
    description="The same pages and cursors as the participant history, for any session, "
    "live or ended, until its messages expire. Senders are named by `sender_type` only.",
    responses=SESSION_NOT_FOUND,
)
async def moderation_messages(
    session_id: SessionIdPath,
    _caller: ServiceCaller,
    state: State,
    before: BeforeQuery = None,
    limit: LimitQuery = history.DEFAULT_LIMIT,
) -> history.HistoryPage:
    cursor = decoded_cursor(history.HistoryCursor.decode, before, "before")
    async with state.db.transaction() as db:
        return await history.moderation_page(db, session_id=session_id, before=cursor, limit=limit)


@internal_router.get(
    "/sessions",
    response_model=SessionPage,
    summary="Look sessions up by participant and state, newest first",
)
async def find_sessions(
    _caller: ServiceCaller,
    state: State,
    user_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=USER_ID_MAX_CHARS,
            pattern=USER_ID_CHARS,
            description="Sessions this user takes part in, as seeker or as provider.",
        ),
    ] = None,
    session_state: Annotated[
        SessionStateName | None, Query(alias="state", description="Only sessions in this state.")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=service.MAX_PAGE_SIZE, description="Sessions per page.")
    ] = service.DEFAULT_PAGE_SIZE,
    cursor: BeforeQuery = None,
) -> SessionPage:
    before_pk = decoded_cursor(service.decode_session_cursor, cursor, "cursor")
    async with state.db.transaction() as db:
        return await service.find_sessions(
            db, user_id=user_id, state=session_state, before_pk=before_pk, limit=limit
        )


def _ending_route(verb: str, command: Callable[[uuid.UUID], Command], description: str) -> None:
    """``POST /sessions/{id}/<verb>``: the ending command of the WebSocket path, for any
    session, answered with the session as it ended."""

    async def end(session_id: SessionIdPath, _caller: ServiceCaller, state: State) -> SessionDetail:
        await state.pipeline.submit(command(session_id))
        async with state.db.transaction() as db:
            return await service.get_session_detail(db, session_id)

    end.__name__ = f"{verb}_session"  # the OpenAPI operation id
    internal_router.post(
        f"/sessions/{{session_id}}/{verb}",
        response_model=SessionDetail,
        summary=f"{verb.capitalize()} a live session",
        description=description,
        responses={**SESSION_NOT_FOUND, **ALREADY_ENDED},
    )(end)


_ending_route(
    "cancel",
    lambda session_id: CancelSession(session_id, by=None),
    "The same effects and events as `cancel_connection`, with "
    '`cancelled_by: "system"`; both participants\' sockets then close with 1000.',
)
_ending_route(
    "complete",
    lambda session_id: CompleteSession(session_id, provider_id=None),
    "The same effects and events as the provider's `complete_session`; both "
    "participants' sockets then close with 1000.",
)
