from __future__ import annotations

import logging
import socket

import pytest

from worksession.kit.broker import MemoryBroker
from worksession.kit.redis_broker import RedisBroker
from worksession.realtime.ratelimit import (
    SHARED_RETRY_AFTER_S,
    BucketTable,
    SharedBudget,
    TokenBucket,
    retry_after_ms,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=20, burst=40, clock=clock)
    assert all(bucket.take() == 0 for _ in range(40))
    wait = bucket.take()
    assert abs(wait - 0.05) < 1e-9  # one token every 50 ms
    clock.now += 0.051
    assert bucket.take() == 0


def test_retry_after_is_at_least_a_millisecond() -> None:
    assert retry_after_ms(0.0001) == 1
    assert retry_after_ms(0.05) == 50


def test_abuse_lasts_while_the_client_stays_over_the_limit() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=20, burst=40, clock=clock)
    for _ in range(40):
        bucket.take()
    for _ in range(1100):  # 100 frames a second for 11 s: every fifth one passes
        bucket.take()
        clock.now += 0.01
    assert bucket.dropping_for() >= 10


def test_a_calm_second_ends_the_abuse() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=20, burst=40, clock=clock)
    for _ in range(41):
        bucket.take()
    assert bucket.dropping_since is not None
    clock.now += 1.5
    assert bucket.take() == 0
    assert bucket.dropping_for() == 0


def test_a_user_spread_over_two_workers_gets_half_the_budget_on_each() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=40, burst=80, clock=clock)
    bucket.resize(rate=20, burst=40)  # the user's sockets are now on two workers
    assert sum(1 for _ in range(80) if bucket.take() == 0) == 40
    clock.now += 1.0
    assert sum(1 for _ in range(80) if bucket.take() == 0) == 20


def test_a_bucket_table_forgets_only_buckets_that_refilled() -> None:
    clock = FakeClock()
    table = BucketTable(rate=10, burst=20, max_keys=2, clock=clock)
    assert all(table.take("a") == 0 for _ in range(20))
    assert table.take("a") > 0
    clock.now += 5.0  # "a" has refilled: forgetting it changes nothing
    table.take("b")
    table.take("c")
    assert len(table) == 2
    for _ in range(19):
        table.take("c")
    assert table.take("c") > 0  # "c", still draining, was not forgotten


async def test_a_shared_budget_without_a_shared_store_counts_in_this_process() -> None:
    budget = SharedBudget(MemoryBroker(), rate=10, burst=20, clock=FakeClock())
    waits = [await budget.take("rest:seeker:s1") for _ in range(21)]
    assert waits[:20] == [0.0] * 20
    assert waits[20] > 0
    assert await budget.take("rest:seeker:s2") == 0.0  # another participant's own bucket


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the probe is closed


async def test_an_unreachable_shared_budget_is_left_alone_for_a_while(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A real Redis client on a port where nothing listens: every call is refused. The
    # first request finds out and is counted here; the next ones, for SHARED_RETRY_AFTER_S,
    # do not try Redis (and wait out its connect) again.
    clock = FakeClock()
    broker = RedisBroker(f"redis://127.0.0.1:{_closed_port()}/0", prefix="budget-test")
    budget = SharedBudget(broker, rate=10, burst=20, clock=clock)
    try:
        with caplog.at_level(logging.WARNING, logger="worksession.realtime.ratelimit"):
            waits = [await budget.take("rest:provider:p1") for _ in range(21)]
            assert len(caplog.records) == 1
            clock.now += SHARED_RETRY_AFTER_S
            await budget.take("rest:provider:p1")
            assert len(caplog.records) == 2  # tried again, and refused again
    finally:
        await broker.client.aclose()
    assert waits[:20] == [0.0] * 20
    assert waits[20] > 0  # counted in this process all along
