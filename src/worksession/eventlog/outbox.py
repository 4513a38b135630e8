"""What a batch wants published, held until its transaction has committed, and the one
encoding of what travels through the broker.

The pipeline fills an ``Outbox`` from the decisions of a batch and publishes it only after
``COMMIT``; a batch that rolls back publishes nothing, so nobody is ever told about a
change that did not happen.

Broker payloads are bytes of one of two shapes, so that a worker hands a frame to its
sockets without decoding and encoding it again:

- ``E`` + the JSON of a logged event (``LoggedEvent.to_wire``): each socket renders it for
  its own role and drops it if it already has that ``seq``;
- ``F`` + the id of a socket not to deliver to (or nothing) + ``|`` + the frame's text,
  sent as is to every other socket of the channel's user.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from worksession.eventlog.events import LoggedEvent
from worksession.kit.broker import Broker

logger = logging.getLogger(__name__)

Role = Literal["seeker", "provider"]
Recipient = tuple[Role, str]
"""A user in one role: every socket of theirs listens on its channel."""

_EVENT = b"E"
_FRAME = b"F"
_SKIP_END = b"|"


def user_channel(role: str, user_id: str) -> str:
    """The broker channel of one user in one role; every socket of that user listens on it."""
    return f"ws:{role}:{user_id}"


def dumps(value: Any) -> str:
    """The one JSON encoding of the wire: compact, UTF-8, key order as built."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_payload(event: LoggedEvent) -> bytes:
    return _EVENT + dumps(event.to_wire()).encode()


def frame_payload(text: str, *, skip: str | None = None) -> bytes:
    return _FRAME + (skip or "").encode() + _SKIP_END + text.encode()


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded broker payload: a logged event, or a frame's text and the socket to skip."""

    event: LoggedEvent | None = None
    text: str = ""
    skip: str | None = None


def decode(payload: bytes) -> Envelope:
    """The envelope of ``payload``; raises ``ValueError`` for anything else."""
    kind, body = payload[:1], payload[1:]
    if kind == _EVENT:
        return Envelope(event=LoggedEvent.from_wire(json.loads(body)))
    if kind == _FRAME:
        skip, found, text = body.partition(_SKIP_END)
        if found:
            return Envelope(text=text.decode(), skip=skip.decode() or None)
    raise ValueError("not a worksession broker payload")


@dataclass(slots=True)
class Outbox:
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    durable: list[tuple[str, bytes]] = field(default_factory=list)
    """The logged events among ``messages``: worth publishing again after a failure, since
    receivers drop what they already have by ``seq``. Ephemeral frames are not: a late
    ``typing_indicator: true`` would undo the ``false`` sent after it."""

    def event(self, event: LoggedEvent, *, seeker_id: str, provider_id: str) -> None:
        """A logged event goes to both participants; each socket renders it for its role."""
        payload = event_payload(event)
        for channel in (user_channel("seeker", seeker_id), user_channel("provider", provider_id)):
            self.messages.append((channel, payload))
            self.durable.append((channel, payload))

    def frame(self, recipients: Iterable[Recipient], text: str, *, skip: str | None = None) -> None:
        """An ephemeral frame (no seq), encoded once, sent as is to every socket of each
        recipient but the socket ``skip`` (which got it as the answer to its own frame)."""
        payload = frame_payload(text, skip=skip)
        for role, user_id in recipients:
            self.messages.append((user_channel(role, user_id), payload))

    def extend(self, other: Outbox) -> None:
        self.messages.extend(other.messages)
        self.durable.extend(other.durable)

    def __bool__(self) -> bool:
        return bool(self.messages)


async def publish(broker: Broker, outbox: Outbox) -> None:
    """Publish after commit, in order. A broker failure loses nothing that matters: the
    events are in the log and every client heals from it (gap filling, ``resume``)."""
    if not outbox:
        return
    broker.deliver_here(outbox.durable)
    try:
        await broker.publish(outbox.messages)
    except Exception as exc:
        # A recipient hears of the events when the broker is back (a second try, its own
        # resync, the next event's gap fill, or its resume); never from a retry of ours
        # for ephemeral frames.
        logger.warning("broker publish failed (%s); events will be retried", type(exc).__name__)
        broker.retry_later(outbox.durable)
