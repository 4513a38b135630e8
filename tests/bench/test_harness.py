"""The harness's own arithmetic: percentiles of merged histograms and /proc readings."""

from __future__ import annotations

import os
import random
import time

import pytest

from bench.latency import Histogram
from bench.processes import ProcessGroup


def test_percentiles_are_within_one_percent_of_the_exact_ones() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(-6, 1) for _ in range(20_000)]  # seconds, ~2.5 ms median
    halves = Histogram(), Histogram()
    for i, sample in enumerate(samples):
        halves[i % 2].record(sample)
    merged = Histogram.from_json(
        Histogram.merged([Histogram.from_json(h.to_json()) for h in halves]).to_json()
    )
    exact = sorted(samples)
    assert merged.count == len(samples)
    for fraction in (0.5, 0.9, 0.99):
        expected_us = exact[int(fraction * len(exact)) - 1] * 1e6
        assert merged.percentile(fraction) == pytest.approx(expected_us, rel=0.011)
    assert merged.max_us == pytest.approx(exact[-1] * 1e6)


def test_an_empty_histogram_has_no_percentiles() -> None:
    summary = Histogram().summary_ms()
    assert summary["count"] == 0
    assert summary["p99_ms"] != summary["p99_ms"]  # NaN, not a made-up zero


def test_cpu_time_of_a_busy_process_grows_by_what_it_spent() -> None:
    group = ProcessGroup.under([os.getpid()])
    before_cpu, before_clock = group.cpu(), time.process_time()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    spent = time.process_time() - before_clock
    assert group.cpu() - before_cpu == pytest.approx(spent, abs=0.05)
    assert group.rss() > 10_000_000
