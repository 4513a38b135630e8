"""The Redis backend of :class:`~worksession.kit.broker.Broker`: one pub/sub connection per
worker process, shared by all of its sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

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
RETRY_BUFFER = 10_000
"""Messages kept for a second try after a failed publish; the oldest go first when full."""
ECHOES = 10_000
"""Messages delivered here ahead of Redis whose copy from Redis is still awaited."""


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
        # Bounded waits: a Redis that hangs must fail a publish (the commit stands) rather
        # than hold the frame loop, and must not keep a dead leader believing it leads.
        self.client: Redis = Redis.from_url(
            url, health_check_interval=10, socket_timeout=5, socket_connect_timeout=2
        )
        self._prefix = f"{prefix}:"
        self._channels: set[str] = set()
        # A channel of our own keeps the pub/sub connection open while no user is online.
        self._control = f"{self._prefix}_worker:{uuid.uuid4().hex}"
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
        self.reconnects = 0

    async def start(self, deliver: Deliver, on_resubscribed: Resubscribed | None = None) -> None:
        self._deliver = deliver
        self._on_resubscribed = on_resubscribed
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
        await self.client.aclose()


async def _close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(Exception):  # it is being dropped because it failed
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
