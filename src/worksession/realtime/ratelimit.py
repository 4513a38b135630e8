"""Token buckets, checked before a frame is even parsed: one per connection, one per user.

The user's bucket (``WORKSESSION_USER_RATE_LIMIT_PER_S`` with bursts of
``WORKSESSION_USER_RATE_LIMIT_BURST``) is shared by that user's sockets on this worker.
When the user's sockets are spread over ``n`` workers, each worker's bucket gets
``1/n`` of the rate and of the burst (see :meth:`Hub.spread`), so their sum never exceeds
the user's budget and no frame costs a Redis round trip. The price: a user whose frames
all go through one of their ``n`` workers gets only ``1/n`` of the budget there, until
the sockets elsewhere close. With one worker, the usual case, the count is exact.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from worksession.kit.broker import Broker

logger = logging.getLogger(__name__)

CALM_AFTER_S = 1.0
"""A client that goes this long without a dropped frame is no longer counted as abusive."""


class TokenBucket:
    """``rate`` frames a second on average, bursts of up to ``burst``.

    Also remembers since when the client has been over its limit, so the gateway can close
    one that keeps hammering (1008 after ``SUSTAINED_ABUSE_S``). A client sending at five
    times the rate still gets every fifth frame through as tokens trickle back; that does
    not end its abuse: only a second without any dropped frame does.
    """

    def __init__(
        self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self.dropping_since: float | None = None
        self._last_drop = 0.0

    def take(self) -> float:
        """0.0 when the frame may pass; otherwise the seconds until one token is back."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self.dropping_since is not None and now - self._last_drop >= CALM_AFTER_S:
            self.dropping_since = None
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        if self.dropping_since is None:
            self.dropping_since = now
        self._last_drop = now
        return (1.0 - self._tokens) / self.rate

    def resize(self, *, rate: float, burst: float) -> None:
        """New limits from now on; tokens above the new burst are lost."""
        self.take_nothing()
        self.rate = rate
        self.burst = burst
        self._tokens = min(self._tokens, burst)

    def take_nothing(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    @property
    def updated(self) -> float:
        """When tokens were last counted (by the bucket's clock)."""
        return self._updated

    def dropping_for(self) -> float:
        """Seconds the client has been over its limit without a calm second."""
        if self.dropping_since is None:
            return 0.0
        return self._clock() - self.dropping_since


def retry_after_ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class BucketTable:
    """Token buckets by key, for callers counted without a socket (REST requests), kept
    to ``max_keys``: past that, the buckets that have refilled (and so hold nothing a new
    bucket would not) are dropped."""

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._drop_refilled()
            bucket = self._buckets[key] = TokenBucket(
                rate=self.rate, burst=self.burst, clock=self._clock
            )
        return bucket.take()

    def _drop_refilled(self) -> None:
        refill_s = self.burst / self.rate
        now = self._clock()
        self._buckets = {
            key: bucket for key, bucket in self._buckets.items() if now - bucket.updated < refill_s
        }

    def __len__(self) -> int:
        return len(self._buckets)


SHARED_RETRY_AFTER_S = 5.0
"""After the shared count could not be reached, how long requests are counted in this
process alone before Redis is tried again."""


class SharedBudget:
    """A token bucket per key over every worker, kept by the broker (in Redis), and this
    process's own ``BucketTable`` whenever the broker keeps none (the in-process broker)
    or cannot be reached. After a failure the shared count is left alone for
    ``SHARED_RETRY_AFTER_S``: during an outage each request would otherwise wait out a
    connect timeout, and log it, before being counted here anyway."""

    def __init__(
        self,
        broker: Broker,
        *,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._broker = broker
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._local = BucketTable(rate=rate, burst=burst, clock=clock)
        self._shared_retry_at = 0.0

    async def take(self, key: str) -> float:
        """0.0 when the call may go on; otherwise the seconds until a token is back."""
        if self._clock() >= self._shared_retry_at:
            try:
                wait = await self._broker.take_shared_token(key, self._rate, self._burst)
            except Exception as exc:
                logger.warning(
                    "could not reach the shared rate limit (%s); counting in this process for %g s",
                    type(exc).__name__,
                    SHARED_RETRY_AFTER_S,
                )
                self._shared_retry_at = self._clock() + SHARED_RETRY_AFTER_S
            else:
                if wait is not None:
                    return wait
        return self._local.take(key)
