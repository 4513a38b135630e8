"""Delivered and read receipts (PROTOCOL 5): a message's status only moves forward.

``sent -> delivered -> read``, one step at a time; each step taken is one
``message_status`` event in the session's log, so both participants (every device of
each, *1.1*) see every step exactly once, also after a ``resume``. A repeated or backward
receipt changes and sends nothing.
"""

from __future__ import annotations

from datetime import datetime

from worksession.errors import Forbidden, MessageNotFound
from worksession.eventlog.events import NewEvent
from worksession.pipeline.commands import AcknowledgeMessage
from worksession.pipeline.decision import (
    Decision,
    MessageDelivered,
    Observation,
    PutMessage,
    PutSession,
    Write,
)
from worksession.pipeline.rows import evolve
from worksession.pipeline.world import World
from worksession.sessions.access import live_session_of, logged
from worksession.sessions.states import MessageStatus

STEPS_TO: dict[str, tuple[MessageStatus, ...]] = {
    "delivered": (MessageStatus.DELIVERED,),
    "read": (MessageStatus.DELIVERED, MessageStatus.READ),
}
"""The steps a receipt asks for, in order: ``read`` implies ``delivered``, so a ``read`` on
a ``sent`` message logs both (a client that only handles single steps stays right)."""

_FROM: dict[MessageStatus, MessageStatus] = {
    MessageStatus.DELIVERED: MessageStatus.SENT,
    MessageStatus.READ: MessageStatus.DELIVERED,
}
"""A step is taken only from the status right behind it."""


def decide_acknowledge(world: World, command: AcknowledgeMessage, now: datetime) -> Decision:
    """Move a received message forward to ``delivered`` or ``read``; never back.

    ``message_not_found`` for a message that does not exist, has expired or is in a
    session the acker does not take part in (in the role they act in); ``forbidden`` for
    one's own message; ``invalid_state`` once the session has ended. Receipts have no
    answer of their own: both participants learn of them through the events.
    """
    actor = command.actor
    message = world.message(command.message_id)
    session = None if message is None else world.session(message.session_id)
    if (
        message is None
        or session is None
        or message.expired(now)
        or session.participant(actor.role) != actor.user_id
    ):
        raise MessageNotFound()
    if message.sender_type == actor.role:
        raise Forbidden("You cannot acknowledge your own message")
    session = live_session_of(session, actor)
    steps: list[NewEvent] = []
    observations: list[Observation] = []
    for step in STEPS_TO[command.status]:
        if message.delivery_status != _FROM[step].value:
            continue
        message = evolve(message, delivery_status=step.value, updated_at=now)
        if step is MessageStatus.DELIVERED:
            message = evolve(message, delivered_at=now)
        else:
            message = evolve(message, read_at=now)
        steps.append(
            (
                "message_status",
                {
                    "message_id": str(message.message_id),
                    "status": step.value,
                    "sender_type": message.sender_type,
                },
            )
        )
        if step is MessageStatus.DELIVERED:
            observations.append(MessageDelivered(message.created_at, now))
    if not steps:
        return Decision()
    session, events = logged(session, now, steps)
    writes: tuple[Write, ...] = (PutSession(session), PutMessage(message))
    return Decision(out=events, writes=writes, observations=tuple(observations))
