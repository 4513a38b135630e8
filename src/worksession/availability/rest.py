"""Internal REST API for a user's availability (service tokens), PROTOCOL 7.

A user id is opaque and may act in both roles, so one resource carries both flags:
whether they take offers as a provider and whether they are searching as a seeker. A flag
never set reads ``null``; in a ``PUT``, ``null`` (or leaving the field out) means "leave
it unchanged", so a caller can switch one flag without knowing the other.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from worksession.availability import lookup
from worksession.availability.flags import Availability
from worksession.pipeline.commands import SetAvailability
from worksession.rest_auth import AUTH_RESPONSES, BODY_RESPONSES, ServiceCaller
from worksession.sessions.schemas import USER_ID_CHARS, USER_ID_MAX_CHARS
from worksession.state import AppState, get_state

router = APIRouter(prefix="/internal/v1", tags=["internal"], responses=AUTH_RESPONSES)

State = Annotated[AppState, Depends(get_state)]
UserIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=USER_ID_MAX_CHARS,
        pattern=USER_ID_CHARS,
        description="The user's id (JWT `sub`).",
    ),
]


class AvailabilityUpdate(BaseModel):
    """The flags to change; a null or absent flag keeps its current value."""

    model_config = ConfigDict(extra="forbid")

    provider_active: StrictBool | None = Field(
        default=None, description="Whether the user takes work offers as a provider"
    )
    seeker_searching: StrictBool | None = Field(
        default=None, description="Whether the user is searching as a seeker"
    )


@router.get(
    "/users/{user_id}/availability",
    response_model=Availability,
    summary="A user's availability as provider and as seeker",
    description="Each flag is null until it has been set once.",
)
async def get_availability(
    user_id: UserIdPath, _caller: ServiceCaller, state: State
) -> Availability:
    async with state.db.transaction() as db:
        return await lookup.get_availability(db, user_id)


@router.put(
    "/users/{user_id}/availability",
    response_model=Availability,
    summary="Set a user's availability flags",
    description="Null or absent flags stay as they are; the answer is the resulting state.",
    responses=BODY_RESPONSES,
)
async def put_availability(
    user_id: UserIdPath, body: AvailabilityUpdate, _caller: ServiceCaller, state: State
) -> Availability:
    command = SetAvailability(user_id, body.provider_active, body.seeker_searching)
    outcome = await state.pipeline.submit(command)
    return outcome.result(Availability)
