"""When the receiver as a whole is failing, stop sending to it and try it now and then.

Each row's own backoff (1 s, 2 s, 4 s, ...) protects a receiver from one webhook, not from
the queue: with a receiver that is down, every row written keeps falling due, and the
attempts add up to the arrival rate times the ~17 attempts of a row's 24 hours (a
receiver refusing connections at 100 webhooks/s would be tried some 1,700 times a second,
each a claim, a POST and an outcome write). A receiver that hangs is cheaper per second,
since the 32 slots wait out their timeout, but its failures come in bursts: 32 timeouts
in one millisecond, 32 new connections and requests after them, every 5 s, and a worker's
live traffic queues behind each burst.

So the dispatcher keeps one breaker per worker. Closed, it sends as usual. After
``failures_to_open`` attempts in a row that the receiver failed (no answer, a connection
error, a 5xx or a 429; not another 4xx, which is about one webhook, not the receiver), it
opens: nothing is claimed or sent for ``cooldown`` (1 s, then doubled each time it opens
again without an answer in between, at most 30 s). Then one probe (half open): one due
row is sent; if the receiver takes it, the breaker closes and the queue drains at full
speed; if not, it opens again for the next, longer cool-down. A receiver back from an
outage is noticed within the longest cool-down plus one attempt.

Rows wait while it is open without spending attempts; they still give up 24 hours after
they were written.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

FAILURES_TO_OPEN = 5
"""More than one webhook's retries in a row (a 500, 500, 500 for one webhook while nothing
else is sent must not stop the others) and fewer than a burst of timeouts."""
FIRST_COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 30.0


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """The state machine only: the dispatcher asks :meth:`slots` before a claim and
    reports every attempt's end to :meth:`answered` or :meth:`failed`."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        failures_to_open: int = FAILURES_TO_OPEN,
        first_cooldown_s: float = FIRST_COOLDOWN_S,
        max_cooldown_s: float = MAX_COOLDOWN_S,
    ) -> None:
        self._clock = clock
        self._failures_to_open = failures_to_open
        self._first_cooldown_s = first_cooldown_s
        self._max_cooldown_s = max_cooldown_s
        self._failures = 0
        self._cooldown_s = 0.0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> State:
        if self._cooldown_s == 0.0:
            return State.CLOSED
        return State.OPEN if self._clock() < self._open_until else State.HALF_OPEN

    def slots(self, ceiling: int, in_flight: int) -> int:
        """How many more sends may start now."""
        state = self.state
        if state is State.CLOSED:
            return max(ceiling - in_flight, 0)
        if state is State.OPEN or self._probing:
            return 0
        return 1

    def probing(self) -> None:
        """The one send of the half-open state has started."""
        if self.state is State.HALF_OPEN:
            self._probing = True

    def reopens_in(self) -> float | None:
        """Seconds until a probe may go, while open (when to wake up)."""
        if self.state is not State.OPEN:
            return None
        return max(self._open_until - self._clock(), 0.0)

    def answered(self) -> None:
        """The receiver answered an attempt (any status that is about the webhook)."""
        self._failures = 0
        self._cooldown_s = 0.0
        self._probing = False

    def failed(self, *, probe: bool = False) -> bool:
        """The receiver failed an attempt (``probe``: the half-open state's one); returns
        True if this opened the breaker."""
        self._failures += 1
        if probe:
            self._probing = False
        if self.state is State.OPEN:
            return False  # a send started before it opened: the cool-down already runs
        if not probe and self._failures < self._failures_to_open:
            return False
        self._cooldown_s = (
            self._first_cooldown_s
            if self._cooldown_s == 0.0
            else min(self._cooldown_s * 2, self._max_cooldown_s)
        )
        self._open_until = self._clock() + self._cooldown_s
        return True
