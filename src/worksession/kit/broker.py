"""Fan-out between worker processes: the ``Broker`` interface and its in-process backend."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

Deliver = Callable[[str, bytes], None]
"""Called with (channel, payload) for every message on a channel this worker subscribed to.
It must not block: it hands the payload to local queues and returns."""

Resubscribed = Callable[[], None]
"""Called after the broker came back from an outage: whatever was published meanwhile is
lost, so the caller catches its subscribers up from its own durable log."""


class Broker(abc.ABC):
    """Publish/subscribe on named channels, one subscription per worker process.

    Delivery guarantee: **at most once**. A message published while a subscriber is
    disconnected, or while the broker itself is unreachable, is gone. Nothing built on
    this interface may rely on every message arriving: the session event log and ``seq``
    numbers are what make delivery complete (clients and the gateway fill gaps from the
    log). Messages published by one caller to one channel arrive in publication order.
    """

    @abc.abstractmethod
    async def start(self, deliver: Deliver, on_resubscribed: Resubscribed | None = None) -> None:
        """Begin delivering messages of subscribed channels to ``deliver``."""

    @abc.abstractmethod
    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish (channel, payload) pairs, in order. Raises if the broker is unreachable."""

    def deliver_here(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Hand ``messages`` to this worker's own subscribers now, ahead of the broker's
        copy. Only for messages a subscriber can tell apart from a repeat (logged events,
        dropped by seq): the broker's copy may still arrive. The default does nothing."""
        return None

    def retry_later(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Best effort beyond the guarantee: publish ``messages`` again once the broker
        is reachable (they failed to publish). The default forgets them."""
        return None

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the broker cannot currently carry messages."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class MemoryBroker(Broker):
    """The embedded default: one process, so publishing is a direct, synchronous hand-off."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._channels: set[str] = set()

    async def start(self, deliver: Deliver, on_resubscribed: Resubscribed | None = None) -> None:
        self._deliver = deliver

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        deliver = self._deliver
        if deliver is None:
            return
        for channel, payload in messages:
            if channel in self._channels:
                deliver(channel, payload)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._deliver = None
        self._channels.clear()
