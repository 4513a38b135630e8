"""Whether a provider takes offers and whether a seeker is searching.

A user id is opaque and may act in both roles, so the two flags live in separate tables and
each is ``None`` until it has been set once. Writes go through the pipeline like every
other change (an accept and an ending switch the same flags).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from worksession.pipeline.commands import SetAvailability
from worksession.pipeline.decision import Decision, Flag, Result, SetFlag, Write
from worksession.pipeline.world import World


class Availability(BaseModel):
    model_config = ConfigDict(frozen=True)

    provider_active: bool | None
    seeker_searching: bool | None


def decide_set(world: World, command: SetAvailability, now: datetime) -> Decision:
    """Set the flags given (None keeps a flag); the answer is the resulting state."""
    del now
    user = command.user_id
    writes: list[Write] = []
    if command.provider_active is not None:
        writes.append(SetFlag("provider_active", user, command.provider_active))
    if command.seeker_searching is not None:
        writes.append(SetFlag("seeker_searching", user, command.seeker_searching))
    after = Availability(
        provider_active=_after(world, writes, "provider_active", user),
        seeker_searching=_after(world, writes, "seeker_searching", user),
    )
    return Decision(writes=tuple(writes), reply=Result(after))


def _after(world: World, writes: list[Write], flag: Flag, user: str) -> bool | None:
    for write in writes:
        if isinstance(write, SetFlag) and write.flag == flag:
            return write.value
    return world.flag(flag, user)
