"""When the receiver as a whole is failing, stop sending to it and try it now and then.

Each row's own backoff (1 s, 2 s, 4 s, ...) protects a receiver from one webhook, not from
the queue: with a receiver that is down, every row written keeps falling due, and the
attempts add up to the arrival rate times the ~17 attempts of a row's 24 hours (a
receiver refusing connections at 100 webhooks/s would be tried some 1,700 times a second,
each a claim, a POST and an outcome write). A receiver that hangs is cheaper per second,
since the 32 slots wait out their timeout, but its failures come in bursts: 32 timeouts
in one millisecond, 32 new connections and requests after them, every 5 s, and a worker's
live traffic queues behind each burst.

So the dispatcher keeps one breaker per worker. Closed, it sends as usual. Once
``failures_to_open`` distinct webhooks have failed with no answer from the receiver in
between (a failure: no answer, a connection error or another error of our own sending, a
5xx or a 429; any other status is an answer, about one webhook, not the receiver), it
opens: nothing is claimed or sent for the cool-down (1 s, then doubled each time it opens
again without an answer in between, at most 30 s). Then one probe (half open): a due
row, one never tried if there is one (in a partial outage, the webhooks that keep failing
are the oldest due, and a probe from them would keep the healthy ones waiting); if the
receiver answers it, the breaker closes and the queue drains at full speed; if not, it
opens again for the next, longer cool-down. A receiver back from an outage is noticed
within the longest cool-down plus one attempt.

Rows wait while it is open without spending attempts. Their give-up time still holds:
the dispatcher marks those past it dead without sending them, open or not.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable

FAILURES_TO_OPEN = 5
"""Distinct webhooks failed with no answer in between: one webhook's own retries (a 500,
500, 500 for it while nothing else is sent) count once and never stop the others."""
FIRST_COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 30.0


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """The state machine only: the dispatcher asks :meth:`slots` before a claim, names the
    half-open state's probe with :meth:`probing`, and reports how every attempt ended
    (:meth:`answered`, :meth:`failed`, or :meth:`abandoned` for one that never got that
    far), each with the webhook's id."""

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
        self._failing: set[Hashable] = set()
        self._cooldown_s = 0.0
        self._open_until = 0.0
        self._probe: Hashable | None = None

    @property
    def state(self) -> State:
        if self._cooldown_s == 0.0:
            return State.CLOSED
        return State.OPEN if self._clock() < self._open_until else State.HALF_OPEN

    def slots(self, ceiling: int, in_flight: int) -> int:
        """How many more sends may start now."""
        free = max(ceiling - in_flight, 0)
        state = self.state
        if state is State.CLOSED:
            return free
        if state is State.OPEN or self._probe is not None:
            return 0
        return min(1, free)

    def probing(self, webhook: Hashable) -> None:
        """This webhook is the half-open state's probe; no other goes until it ends."""
        self._probe = webhook

    def reopens_in(self) -> float | None:
        """Seconds until a probe may go, while open (when to wake up)."""
        if self.state is not State.OPEN:
            return None
        return max(self._open_until - self._clock(), 0.0)

    def answered(self, webhook: Hashable) -> None:
        """The receiver answered (any status that is about the webhook): closed."""
        self._failing.clear()
        self._cooldown_s = 0.0
        self._probe = None

    def abandoned(self, webhook: Hashable) -> None:
        """The attempt ended without news of the receiver (not sent, cancelled): a probe
        that ends so frees the place of the next one."""
        if self._probe == webhook:
            self._probe = None

    def failed(self, webhook: Hashable) -> bool:
        """The receiver failed this webhook; returns True if that opened the breaker."""
        probe = self._probe is not None and self._probe == webhook
        if probe:
            self._probe = None
        if len(self._failing) < self._failures_to_open:
            self._failing.add(webhook)
        if self.state is State.OPEN:
            return False  # a send started before it opened: the cool-down already runs
        if not probe and len(self._failing) < self._failures_to_open:
            return False
        self._cooldown_s = (
            self._first_cooldown_s
            if self._cooldown_s == 0.0
            else min(self._cooldown_s * 2, self._max_cooldown_s)
        )
        self._open_until = self._clock() + self._cooldown_s
        return True
