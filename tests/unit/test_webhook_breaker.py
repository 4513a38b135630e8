"""The webhook dispatcher's breaker as a state machine, on a clock the test moves."""

from __future__ import annotations

import pytest

from worksession.webhooks.breaker import Breaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> Breaker:
    return Breaker(clock=clock, failures_to_open=3, first_cooldown_s=1.0, max_cooldown_s=4.0)


def test_closed_it_offers_every_free_slot(breaker: Breaker) -> None:
    assert breaker.state is State.CLOSED
    assert breaker.slots(32, 0) == 32
    assert breaker.slots(32, 30) == 2
    assert breaker.slots(32, 32) == 0


def test_failures_short_of_the_threshold_or_broken_by_an_answer_keep_it_closed(
    breaker: Breaker,
) -> None:
    assert not breaker.failed()
    assert not breaker.failed()
    breaker.answered()
    assert not breaker.failed()
    assert not breaker.failed()
    assert breaker.state is State.CLOSED


def test_it_opens_on_the_threshold_and_ignores_the_rest_of_the_burst(
    breaker: Breaker, clock: Clock
) -> None:
    assert [breaker.failed() for _ in range(6)] == [False, False, True, False, False, False]
    assert breaker.state is State.OPEN
    assert breaker.slots(32, 0) == 0
    assert breaker.reopens_in() == 1.0
    clock.now += 0.4
    assert breaker.reopens_in() == pytest.approx(0.6)


def test_after_the_cooldown_one_probe_at_a_time(breaker: Breaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.failed()
    clock.now += 1.0
    assert breaker.state is State.HALF_OPEN
    assert breaker.reopens_in() is None
    assert breaker.slots(32, 0) == 1
    breaker.probing()
    assert breaker.slots(32, 0) == 0  # the probe is out


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_cap(
    breaker: Breaker, clock: Clock
) -> None:
    for _ in range(3):
        breaker.failed()
    cooldowns = []
    for _ in range(4):
        clock.now += 10.0
        breaker.probing()
        assert breaker.failed(probe=True)
        cooldowns.append(breaker.reopens_in())
    assert cooldowns == [2.0, 4.0, 4.0, 4.0]


def test_an_answer_closes_it_and_the_next_opening_starts_short_again(
    breaker: Breaker, clock: Clock
) -> None:
    for _ in range(3):
        breaker.failed()
    clock.now += 1.0
    breaker.probing()
    breaker.failed(probe=True)  # open for 2 s
    clock.now += 2.0
    breaker.probing()
    breaker.answered()
    assert breaker.state is State.CLOSED
    assert breaker.slots(32, 0) == 32
    for _ in range(3):
        breaker.failed()
    assert breaker.reopens_in() == 1.0


def test_a_late_answer_from_before_it_opened_closes_it(breaker: Breaker) -> None:
    for _ in range(3):
        breaker.failed()
    breaker.answered()  # a request sent before the failures, answered now
    assert breaker.state is State.CLOSED


def test_a_late_failure_while_half_open_does_not_free_a_second_probe(
    breaker: Breaker, clock: Clock
) -> None:
    for _ in range(3):
        breaker.failed()
    clock.now += 1.0
    breaker.probing()
    # A send from before the opening fails while the probe is out: that is news about the
    # receiver too (open again), and never a second probe beside the first.
    assert breaker.failed()
    assert breaker.state is State.OPEN
    clock.now += 2.0
    assert breaker.slots(32, 0) == 0
