"""Which worker runs the periodic jobs: a lease on a Redis key, or always this one."""

from __future__ import annotations

import abc
import logging
import time
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

LEASE_SAFETY = 0.8
"""Stop leading at 80 % of the TTL without a renewal, before Redis lets the key go."""

# Renew only our own lease, release only our own lease: compare the token, then act.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Leadership(abc.ABC):
    @property
    @abc.abstractmethod
    def is_leader(self) -> bool: ...

    @abc.abstractmethod
    async def refresh(self) -> bool:
        """Take or renew the lease; returns whether this worker leads now."""

    @abc.abstractmethod
    async def release(self) -> None: ...


class SoleLeader(Leadership):
    """The embedded default has one process: it always leads."""

    @property
    def is_leader(self) -> bool:
        return True

    async def refresh(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class RedisLease(Leadership):
    """A key holding this worker's random token with a TTL.

    ``refresh`` is called often (every second, at most every ``ttl_s / 3``): the holder
    extends its lease, the others try ``SET NX``. If the holder dies, its key expires at
    most ``ttl_s`` after its last renewal and the next follower to try takes over; a holder
    that shuts down deletes the key so a follower takes over at its next try. A holder that
    cannot renew stops leading at once, and in any case at 80 % of the TTL by its own clock,
    so two workers never run the jobs at the same time for longer than one job run.
    """

    def __init__(self, client: Redis, key: str, ttl_s: float) -> None:
        self._client = client
        self._key = key
        self._ttl_ms = max(1000, int(ttl_s * 1000))
        self._token = uuid.uuid4().hex
        self._leading = False
        self._valid_until = 0.0

    @property
    def is_leader(self) -> bool:
        # Our own clock bounds the lease too: a renewal that hangs must not let this worker
        # go on leading after Redis has expired the key and handed it to another.
        return self._leading and time.monotonic() < self._valid_until

    async def refresh(self) -> bool:
        was_leading = self.is_leader
        # Counted from before the request: the key cannot outlive this on Redis's side.
        valid_until = time.monotonic() + self._ttl_ms / 1000 * LEASE_SAFETY
        try:
            if self._leading:  # ours unless it expired: the script renews only our token
                renewed = await self._client.eval(_RENEW, 1, self._key, self._token, self._ttl_ms)
                self._leading = bool(renewed)
            else:
                taken = await self._client.set(self._key, self._token, nx=True, px=self._ttl_ms)
                self._leading = bool(taken)
        except (RedisError, OSError) as exc:
            self._leading = False
            logger.warning("leader lease unreachable: %s", type(exc).__name__)
        if self._leading:
            self._valid_until = valid_until
        if self._leading != was_leading:
            logger.info(
                "this worker %s the periodic jobs",
                "now runs" if self._leading else "no longer runs",
            )
        return self._leading

    async def release(self) -> None:
        if not self._leading:
            return
        self._leading = False
        try:
            await self._client.eval(_RELEASE, 1, self._key, self._token)
        except (RedisError, OSError) as exc:
            logger.warning("could not release the leader lease: %s", type(exc).__name__)
