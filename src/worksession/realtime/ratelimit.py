"""Per-connection token bucket, checked before a frame is even parsed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

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

    def dropping_for(self) -> float:
        """Seconds the client has been over its limit without a calm second."""
        if self.dropping_since is None:
            return 0.0
        return self._clock() - self.dropping_since


def retry_after_ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
