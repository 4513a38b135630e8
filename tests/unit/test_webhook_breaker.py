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


def open_it(breaker: Breaker) -> None:
    for webhook in ("a", "b", "c"):
        breaker.failed(webhook)
    assert breaker.state is State.OPEN


def probe_out(breaker: Breaker, clock: Clock, probe: str) -> None:
    """Opened, its first cool-down over, and this probe sent."""
    open_it(breaker)
    clock.now += 1.0
    assert breaker.state is State.HALF_OPEN
    breaker.probing(probe)


def test_closed_it_offers_every_free_slot(breaker: Breaker) -> None:
    assert breaker.state is State.CLOSED
    assert breaker.slots(32, 0) == 32
    assert breaker.slots(32, 30) == 2
    assert breaker.slots(32, 32) == 0


def test_failures_short_of_the_threshold_or_broken_by_an_answer_keep_it_closed(
    breaker: Breaker,
) -> None:
    assert not breaker.failed("a")
    assert not breaker.failed("b")
    breaker.answered("c")
    assert not breaker.failed("d")
    assert not breaker.failed("e")
    assert breaker.state is State.CLOSED


def test_one_webhook_failing_again_and_again_never_opens_it(breaker: Breaker) -> None:
    # A receiver that 500s one webhook (a bad device token) is not a receiver that fails.
    assert not any(breaker.failed("always-500") for _ in range(10))
    assert breaker.state is State.CLOSED


def test_it_opens_on_the_threshold_and_ignores_the_rest_of_the_burst(
    breaker: Breaker, clock: Clock
) -> None:
    opened = [breaker.failed(webhook) for webhook in "abcdef"]
    assert opened == [False, False, True, False, False, False]
    assert breaker.state is State.OPEN
    assert breaker.slots(32, 0) == 0
    assert breaker.reopens_in() == 1.0
    clock.now += 0.4
    assert breaker.reopens_in() == pytest.approx(0.6)


def test_after_the_cooldown_one_probe_at_a_time(breaker: Breaker, clock: Clock) -> None:
    open_it(breaker)
    clock.now += 1.0
    assert breaker.state is State.HALF_OPEN
    assert breaker.reopens_in() is None
    assert breaker.slots(32, 0) == 1
    assert breaker.slots(32, 32) == 0
    breaker.probing("p")
    assert breaker.slots(32, 0) == 0  # the probe is out


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_cap(
    breaker: Breaker, clock: Clock
) -> None:
    open_it(breaker)
    cooldowns = []
    for k in range(4):
        clock.now += 10.0
        breaker.probing(f"probe-{k}")
        assert breaker.failed(f"probe-{k}")
        cooldowns.append(breaker.reopens_in())
    assert cooldowns == [2.0, 4.0, 4.0, 4.0]


def test_an_answer_closes_it_and_the_next_opening_starts_short_again(
    breaker: Breaker, clock: Clock
) -> None:
    open_it(breaker)
    clock.now += 1.0
    breaker.probing("p1")
    breaker.failed("p1")  # open for 2 s
    clock.now += 2.0
    breaker.probing("p2")
    breaker.answered("p2")
    assert breaker.state is State.CLOSED
    assert breaker.slots(32, 0) == 32
    open_it(breaker)
    assert breaker.reopens_in() == 1.0


def test_a_late_answer_from_before_it_opened_closes_it(breaker: Breaker) -> None:
    open_it(breaker)
    breaker.answered("sent-before")
    assert breaker.state is State.CLOSED


def test_a_probe_failing_after_a_late_answer_closed_it_counts_as_one_failure(
    breaker: Breaker, clock: Clock
) -> None:
    probe_out(breaker, clock, "p")
    breaker.answered("sent-before")  # closed meanwhile
    assert not breaker.failed("p")  # one failure of three, not a probe's verdict
    assert breaker.state is State.CLOSED


def test_a_late_failure_while_half_open_does_not_free_a_second_probe(
    breaker: Breaker, clock: Clock
) -> None:
    probe_out(breaker, clock, "p")
    # A send from before the opening fails while the probe is out: that is news about the
    # receiver too (open again), and never a second probe beside the first.
    assert breaker.failed("sent-before")
    assert breaker.state is State.OPEN
    clock.now += 2.0
    assert breaker.slots(32, 0) == 0
    breaker.failed("p")  # the probe's own end frees the place
    clock.now += 4.0
    assert breaker.slots(32, 0) == 1


def test_a_probe_that_ends_without_news_frees_the_place_of_the_next(
    breaker: Breaker, clock: Clock
) -> None:
    probe_out(breaker, clock, "p")
    breaker.abandoned("other")
    assert breaker.slots(32, 0) == 0
    breaker.abandoned("p")  # cancelled, or not sent: past its give-up time
    assert breaker.slots(32, 0) == 1
    assert breaker.state is State.HALF_OPEN
