"""What a transaction wants published, held until the transaction has committed.

Services write into an ``Outbox`` while they change the database; the edge (gateway, REST
router, scheduled job) publishes it only after ``COMMIT``, and simply drops it when the
transaction rolls back, so nobody is ever told about a change that did not happen.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from worksession.kit.broker import Broker
from worksession.sessions.events import LoggedEvent

logger = logging.getLogger(__name__)

Role = Literal["seeker", "provider"]


def user_channel(role: str, user_id: str) -> str:
    """The broker channel of one user in one role; every socket of that user listens on it."""
    return f"ws:{role}:{user_id}"


def dumps(value: Any) -> str:
    """The one JSON encoding of the wire: compact, UTF-8, key order as built."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(slots=True)
class Outbox:
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    durable: list[tuple[str, bytes]] = field(default_factory=list)
    """The logged events among ``messages``: worth publishing again after a failure, since
    receivers drop what they already have by ``seq``. Ephemeral frames are not: a late
    ``typing_indicator: true`` would undo the ``false`` sent after it."""
    origin: str | None = None
    """The id of the socket whose frame caused this, set by the gateway; a frame published
    with ``skip_origin`` is not delivered to that socket, which got it as a direct answer."""

    def event(self, event: LoggedEvent, *, seeker_id: str, provider_id: str) -> None:
        """A logged event goes to both participants; each socket renders it for its role."""
        payload = dumps({"event": event.to_wire()}).encode()
        for channel in (user_channel("seeker", seeker_id), user_channel("provider", provider_id)):
            self.messages.append((channel, payload))
            self.durable.append((channel, payload))

    def frame(
        self, role: Role, user_id: str, frame: dict[str, Any], *, skip_origin: bool = False
    ) -> None:
        """An ephemeral frame (no seq), sent as is to every socket of one user."""
        envelope: dict[str, Any] = {"frame": frame}
        if skip_origin and self.origin:
            envelope["skip"] = self.origin
        self.messages.append((user_channel(role, user_id), dumps(envelope).encode()))

    def __bool__(self) -> bool:
        return bool(self.messages)


async def publish_all(broker: Broker, outboxes: list[Outbox]) -> None:
    """Publish the outboxes of several committed frames in one call (one pipeline on
    Redis): in order, each outbox's messages in its own order."""
    merged = Outbox()
    for outbox in outboxes:
        merged.messages.extend(outbox.messages)
        merged.durable.extend(outbox.durable)
    await publish(broker, merged)


async def publish(broker: Broker, outbox: Outbox) -> None:
    """Publish after commit. A broker failure loses nothing that matters: the events are in
    the log and every client heals from it (gap filling, ``resume``)."""
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
