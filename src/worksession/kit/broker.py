"""Fan-out between worker processes: the ``Broker`` interface and its in-process backend.

Besides messages, the broker keeps the little state that workers must share and may lose
(it lives in Redis in production): *groups* of members (a user's sockets, wherever they
are) capped in size, and token buckets counted across workers."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

Deliver = Callable[[str, bytes], None]
"""Called with (channel, payload) for every message on a channel this worker subscribed to.
It must not block: it hands the payload to local queues and returns."""

Resubscribed = Callable[[], None]
"""Called after the broker came back from an outage: whatever was published meanwhile is
lost, so the caller catches its subscribers up from its own durable log."""

Evict = Callable[[str], None]
"""Called with the id of a member of this worker that a newer member pushed out of a full
group (see :meth:`Broker.join`). It must not block."""

Spread = Callable[[str, int], None]
"""Called with (group, n) when the members of ``group`` came to be held by ``n`` workers.
It must not block."""


class Broker(abc.ABC):
    """Publish/subscribe on named channels, one subscription per worker process.

    Delivery guarantee: **at most once**. A message published while a subscriber is
    disconnected, or while the broker itself is unreachable, is gone. Nothing built on
    this interface may rely on every message arriving: the session event log and ``seq``
    numbers are what make delivery complete (clients and the gateway fill gaps from the
    log). Messages published by one caller to one channel arrive in publication order.
    """

    def __init__(self) -> None:
        self._evict: Evict = _ignore_evicted
        self._spread: Spread = _ignore_spread

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

    def watch_groups(self, evict: Evict, spread: Spread) -> None:
        """Where to report what :meth:`join` and :meth:`leave` decide, for this worker."""
        self._evict = evict
        self._spread = spread

    async def join(self, group: str, member: str, limit: int) -> int:
        """Add ``member`` (unique to this worker) to ``group``. Past ``limit`` members, the
        oldest are removed and their workers told through ``evict``. Returns how many
        workers now hold the group's members (at least 1); the others are told through
        ``spread``. Raises if the broker is unreachable. The default keeps no groups."""
        return 1

    async def leave(self, group: str, member: str) -> int:
        """Remove ``member`` from ``group``; returns (and spreads) how many workers still
        hold its members (0 when none)."""
        return 0

    async def count_online(self, groups: Sequence[str]) -> dict[str, int]:
        """How many members each of ``groups`` has now, over every worker (members of a
        worker that stopped beating do not count). Raises if the broker is unreachable.
        The default keeps no groups: everyone counts as having none."""
        return dict.fromkeys(groups, 0)

    async def take_shared_token(self, key: str, rate: float, burst: int) -> float | None:
        """Take one token from the bucket ``key`` shared by every worker: 0.0 when there
        was one, else the seconds until there is. None when this broker shares nothing
        between workers (the caller counts locally, which is then exact)."""
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
        super().__init__()
        self._deliver: Deliver | None = None
        self._channels: set[str] = set()
        self._groups: dict[str, dict[str, None]] = {}

    async def start(self, deliver: Deliver, on_resubscribed: Resubscribed | None = None) -> None:
        self._deliver = deliver

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        deliver = self._deliver
        if deliver is None:
            return
        for channel, payload in messages:
            if channel in self._channels:
                deliver(channel, payload)

    async def join(self, group: str, member: str, limit: int) -> int:
        members = self._groups.setdefault(group, {})
        members[member] = None
        while len(members) > limit:
            oldest = next(iter(members))  # a dict keeps the order members joined in
            del members[oldest]
            self._evict(oldest)
        return 1

    async def leave(self, group: str, member: str) -> int:
        members = self._groups.get(group)
        if members is None:
            return 0
        members.pop(member, None)
        if not members:
            del self._groups[group]
            return 0
        return 1

    async def count_online(self, groups: Sequence[str]) -> dict[str, int]:
        return {group: len(self._groups.get(group, ())) for group in groups}

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._deliver = None
        self._channels.clear()
        self._groups.clear()


def _ignore_evicted(member: str) -> None:
    return None


def _ignore_spread(group: str, workers: int) -> None:
    return None
