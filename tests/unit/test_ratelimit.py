from __future__ import annotations

from worksession.realtime.ratelimit import BucketTable, TokenBucket, retry_after_ms


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
