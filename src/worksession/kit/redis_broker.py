"""The Redis backend of :class:`~worksession.kit.broker.Broker`: one pub/sub connection per
worker process, shared by all of its sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worksession.kit.broker import Broker, Deliver, Resubscribed

logger = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
HEARTBEAT_S = 2.0
"""How often a worker publishes to its own control channel. The listener blocks on its
socket with no timeout of its own (a timeout per read costs a timer per message, a tenth
of the listener's CPU at load); a subscription that has not heard its own heartbeat for
``HEARTBEAT_MISSES`` beats is taken for dead and made again."""
HEARTBEAT_MISSES = 3
PUBLISH_ALL = """
for i = 1, #ARGV, 2 do
    redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""
"""Publishes (channel, payload) pairs in order, in one round trip and one reply."""
ALIVE_TTL_MS = int(HEARTBEAT_S * 5 * 1000)
"""A worker's liveness key outlives a few missed heartbeats; once it is gone, the group
members of that worker (a crashed process's sockets) no longer count."""
GROUP_TTL_S = 86_400
"""A group nobody joined for a day is forgotten, whatever a crashed worker left in it."""
SETTLE_GROUP = """
local key, group, self, alive, control = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit = tonumber(ARGV[5])
if ARGV[6] == 'join' then
    local t = redis.call('TIME')
    redis.call('ZADD', key, tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[7])
    redis.call('EXPIRE', key, tonumber(ARGV[8]))
else
    redis.call('ZREM', key, ARGV[7])
end
local function worker_of(member)
    return string.sub(member, 1, string.find(member, '|', 1, true) - 1)
end
local living, kept = {}, {}
for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local worker = worker_of(member)
    if living[worker] == nil then
        living[worker] = redis.call('EXISTS', alive .. worker) == 1
    end
    if living[worker] then
        table.insert(kept, member)
    else
        redis.call('ZREM', key, member)
    end
end
local evicted = {}
local excess = #kept - limit
for i = 1, excess do
    local member = kept[i]
    local worker = worker_of(member)
    local id = string.sub(member, #worker + 2)
    redis.call('ZREM', key, member)
    if worker == self then
        table.insert(evicted, id)
    else
        redis.call('PUBLISH', control .. worker, 'evict:' .. id)
    end
end
local holders, count = {}, 0
for i = math.max(excess, 0) + 1, #kept do
    local worker = worker_of(kept[i])
    if not holders[worker] then
        holders[worker] = true
        count = count + 1
    end
end
for worker, _ in pairs(holders) do
    if worker ~= self then
        redis.call('PUBLISH', control .. worker, 'spread:' .. count .. ':' .. group)
    end
end
table.insert(evicted, 1, count)
return evicted
"""
"""Joins or leaves a group (a sorted set of ``worker|member`` scored by Redis's clock at
join, so workers on hosts with skewed clocks agree on who is oldest), drops the members
of dead workers, evicts the oldest beyond the limit and tells the workers concerned, in
one round trip. Returns the number of workers holding the group, then the evicted
members of the calling worker."""
COUNT_ONLINE = """
local alive, counts, living = ARGV[1], {}, {}
for i, key in ipairs(KEYS) do
    local n = 0
    for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
        local worker = string.sub(member, 1, string.find(member, '|', 1, true) - 1)
        if living[worker] == nil then
            living[worker] = redis.call('EXISTS', alive .. worker) == 1
        end
        if living[worker] then
            n = n + 1
        end
    end
    counts[i] = n
end
return counts
"""
"""The members of each group (``SETTLE_GROUP``'s sorted sets) whose worker is alive, read
only: a dead worker's members are dropped by the next join or leave, not here."""
SHARED_BUCKET = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = (tonumber(t[1]) % 100000) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil or at > now then
    tokens, at = burst, now
end
tokens = math.min(burst, tokens + (now - at) * rate)
local wait = 0
if tokens >= 1 then
    tokens = tokens - 1
else
    wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""
"""A token bucket kept in Redis, timed by Redis's clock (seconds modulo 100000, so that
the fraction keeps its microseconds in a Lua number; a wrap resets the bucket to full,
once a day). Returns the seconds to wait, as text (Lua would truncate a number)."""
RETRY_BUFFER = 10_000
"""Messages kept for a second try after a failed publish; the oldest go first when full."""
ECHOES = 10_000
"""Messages delivered here ahead of Redis whose copy from Redis is still awaited."""


_T = TypeVar("_T")


class BrokenConnectionRetry(Retry):
    """Once, at once, and only for a connection that broke, never for a timeout.

    redis-py's own policy (three retries with backoff) counts a timeout as a connection
    error (``TimeoutError`` subclasses ``ConnectionError``), so a Redis that hangs would
    hold every caller for four socket timeouts instead of one."""

    def __init__(self) -> None:
        super().__init__(NoBackoff(), 1, (RedisConnectionError,))

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[_T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> _T:
        def retryable(error: Exception) -> bool:
            if isinstance(error, RedisTimeoutError):
                return False
            return is_retryable is None or is_retryable(error)

        return await super().call_with_retry(do, fail, retryable, with_failure_count)


class RedisBroker(Broker):
    """At most once, like every Broker: Redis pub/sub forgets what it could not deliver.

    redis-py's asyncio ``PubSub`` does not reconnect on its own; the listener task
    re-creates the subscription with backoff, re-subscribes every channel this worker
    needs, then calls ``on_resubscribed`` so the caller can replay what was missed. A
    heartbeat task publishes to the worker's own control channel every ``HEARTBEAT_S``,
    retries failed publications, and drops a subscription that stopped hearing it (a
    network that fails silently never wakes a blocked read).

    Every channel is namespaced by ``prefix`` so that deployments (or test runs) sharing
    one Redis never hear each other. Past one Redis, the same channel names map onto
    Redis Cluster sharded pub/sub (SPUBLISH/SSUBSCRIBE) without other changes.
    """

    def __init__(self, url: str, *, prefix: str = "worksession") -> None:
        super().__init__()
        # Bounded waits: a Redis that hangs must fail a publish (the commit stands) rather
        # than hold the frame loop, and must not keep a dead leader believing it leads.
        # One immediate retry on a connection error: after an outage the pool still holds
        # connections the outage broke, and each would otherwise fail the first command
        # that picks it (a lease renewal, a publication) although Redis is back. A
        # timeout is not retried, so a hanging Redis still fails within the bounds above.
        self.client: Redis = Redis.from_url(
            url,
            health_check_interval=10,
            socket_timeout=5,
            socket_connect_timeout=2,
            retry=BrokenConnectionRetry(),
            retry_on_error=[RedisConnectionError],
        )
        self._prefix = f"{prefix}:"
        self._channels: set[str] = set()
        # A channel of our own keeps the pub/sub connection open while no user is online.
        self._worker = uuid.uuid4().hex
        self._control = f"{self._prefix}_worker:{self._worker}"
        self._alive = f"{self._prefix}_alive:{self._worker}"
        self._on_resubscribed: Resubscribed | None = None
        self._pubsub: PubSub | None = None
        self._deliver: Deliver | None = None
        self._listener: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._heard = 0.0
        self._connected = asyncio.Event()
        self._retry: deque[tuple[str, bytes]] = deque(maxlen=RETRY_BUFFER)
        self._echoes: dict[tuple[str, bytes], None] = {}
        self._publish_all = self.client.register_script(PUBLISH_ALL)
        self._settle_group = self.client.register_script(SETTLE_GROUP)
        self._count_online = self.client.register_script(COUNT_ONLINE)
        self._take_token = self.client.register_script(SHARED_BUCKET)
        self.reconnects = 0

    async def start(self, deliver: Deliver, on_resubscribed: Resubscribed | None = None) -> None:
        self._deliver = deliver
        self._on_resubscribed = on_resubscribed
        await self.client.set(self._alive, b"", px=ALIVE_TTL_MS)
        await self._connect()
        self._listener = asyncio.create_task(self._listen(), name="redis-broker-listener")
        self._heartbeat = asyncio.create_task(self._beat(), name="redis-broker-heartbeat")

    async def _connect(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        wanted = {self._prefix + c for c in self._channels}
        await pubsub.subscribe(self._control, *sorted(wanted))
        self._pubsub = pubsub
        # A socket that registered while SUBSCRIBE was in flight found no pub/sub to
        # subscribe on; one that left, none to unsubscribe from. Settle the difference.
        now_wanted = {self._prefix + c for c in self._channels}
        if missing := now_wanted - wanted:
            await pubsub.subscribe(*sorted(missing))
        if gone := wanted - now_wanted:
            await pubsub.unsubscribe(*sorted(gone))
        self._heard = asyncio.get_running_loop().time()
        self._connected.set()

    async def _listen(self) -> None:
        attempt = 0
        control = self._control.encode()
        while True:
            pubsub = self._pubsub
            try:
                if pubsub is None:
                    await self._connect()
                    self.reconnects += 1
                    attempt = 0
                    logger.info("broker reconnected; catching sockets up from the event log")
                    if self._on_resubscribed is not None:
                        self._on_resubscribed()
                    continue
                message = await pubsub.get_message(timeout=None)
                if message is None or message.get("type") != "message":
                    continue
                channel = message["channel"]
                if channel == control:
                    self._heard = asyncio.get_running_loop().time()
                    if message["data"]:
                        self._on_control(message["data"])
                    continue
                if isinstance(channel, bytes):
                    channel = channel.decode()
                if self._deliver is not None and channel.startswith(self._prefix):
                    key = (channel[len(self._prefix) :], message["data"])
                    if self._echoes.pop(key, 0) is None:
                        continue  # delivered here already, ahead of Redis
                    self._deliver(*key)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._connected.clear()
                if pubsub is not None:
                    logger.warning("broker connection lost: %s", type(exc).__name__)
                    await _close_quietly(pubsub)
                self._pubsub = None
                delay = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
                attempt += 1
                await asyncio.sleep(delay)
            except Exception:
                logger.exception("broker listener error")
                await asyncio.sleep(0.1)

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            pubsub = self._pubsub
            # A failed publication says nothing about the subscription: try next time.
            with contextlib.suppress(RedisError, OSError):
                await self.client.set(self._alive, b"", px=ALIVE_TTL_MS)
                await self.client.publish(self._control, b"")
                if self._retry:
                    await self._publish_retries()
            if pubsub is not None and loop.time() - self._heard > HEARTBEAT_S * HEARTBEAT_MISSES:
                logger.warning("broker subscription silent; reconnecting")
                await self._restart_listener(pubsub)

    async def _restart_listener(self, pubsub: PubSub) -> None:
        """Drop a subscription that went deaf; the new listener makes it again and has the
        sockets catch up, as after any outage."""
        listener = self._listener
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        self._connected.clear()
        await _close_quietly(pubsub)
        self._pubsub = None
        self._listener = asyncio.create_task(self._listen(), name="redis-broker-listener")

    def deliver_here(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Events committed by this worker reach its own sockets without the Redis round
        trip, so that they never arrive after a later event a socket got directly (the
        answer to its own frame), which would make it read the log to fill the gap.
        Redis's copy is recognised by its bytes and skipped; one that never comes back is
        forgotten once ``ECHOES`` newer ones are waiting."""
        deliver = self._deliver
        if deliver is None:
            return
        for channel, payload in messages:
            if channel in self._channels:
                deliver(channel, payload)
                self._echoes[(channel, payload)] = None
        while len(self._echoes) > ECHOES:
            del self._echoes[next(iter(self._echoes))]

    def retry_later(self, messages: Sequence[tuple[str, bytes]]) -> None:
        self._retry.extend(messages)

    async def _publish_retries(self) -> None:
        pending = list(self._retry)
        self._retry.clear()
        try:
            await self.publish(pending)
        except (RedisError, OSError):
            self._retry.extendleft(reversed(pending))
            raise

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        if len(messages) == 1:
            channel, payload = messages[0]
            await self.client.publish(self._prefix + channel, payload)
            return
        # One command for the whole batch: a script that publishes each pair in order. A
        # pipeline of PUBLISH commands costs redis-py a command to pack and a reply to
        # parse per message (half of the distance tick's CPU); this costs one of each.
        args: list[str | bytes] = []
        for channel, payload in messages:
            args.append(self._prefix + channel)
            args.append(payload)
        await self._publish_all(keys=[], args=args)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._pubsub is not None:
            # If this fails the listener is about to reconnect, and re-subscribes everything.
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.subscribe(self._prefix + channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(self._prefix + channel)

    def _on_control(self, data: bytes) -> None:
        """A message another worker sent this one about a group (heartbeats are empty)."""
        command, _, rest = data.decode().partition(":")
        if command == "evict":
            self._evict(rest)
        elif command == "spread":
            workers, _, group = rest.partition(":")
            self._spread(group, int(workers))

    async def join(self, group: str, member: str, limit: int) -> int:
        return await self._settle(group, member, limit, "join")

    async def leave(self, group: str, member: str) -> int:
        return await self._settle(group, member, 2**31, "leave")

    async def _settle(self, group: str, member: str, limit: int, action: str) -> int:
        reply = await self._settle_group(
            keys=[f"{self._prefix}_group:{group}"],
            args=[
                group,
                self._worker,
                f"{self._prefix}_alive:",
                f"{self._prefix}_worker:",
                limit,
                action,
                f"{self._worker}|{member}",
                GROUP_TTL_S,
            ],
        )
        workers, *evicted = reply
        for evicted_member in evicted:
            self._evict(evicted_member.decode())
        return int(workers)

    async def count_online(self, groups: Sequence[str]) -> dict[str, int]:
        if not groups:
            return {}
        counts = await self._count_online(
            keys=[f"{self._prefix}_group:{group}" for group in groups],
            args=[f"{self._prefix}_alive:"],
        )
        return {group: int(n) for group, n in zip(groups, counts, strict=True)}

    async def take_shared_token(self, key: str, rate: float, burst: int) -> float | None:
        wait = await self._take_token(keys=[f"{self._prefix}_bucket:{key}"], args=[rate, burst])
        return float(wait)

    async def ping(self) -> None:
        if not self._connected.is_set():
            raise ConnectionError("broker subscription is down")
        await self.client.ping()

    async def close(self) -> None:
        for task in (self._heartbeat, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pubsub is not None:
            await _close_quietly(self._pubsub)
        # Our group members stop counting now rather than when the key would expire.
        with contextlib.suppress(RedisError, OSError):
            await self.client.delete(self._alive)
        await self.client.aclose()


async def _close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(Exception):  # it is being dropped because it failed
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
