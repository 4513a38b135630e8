"""Latency histograms that several load-generator processes can merge.

Buckets grow by 1 % (log scale), so a percentile is exact to 1 % from 1 us to hours in a
few hundred buckets, and merging the processes' histograms is adding counts. The maximum
is kept exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GROWTH = math.log(1.01)


def _bucket(micros: float) -> int:
    return int(math.log(max(micros, 1.0)) / GROWTH)


def _upper_bound(bucket: int) -> float:
    return math.exp((bucket + 1) * GROWTH)


@dataclass
class Histogram:
    counts: Counter[int] = field(default_factory=Counter)
    count: int = 0
    max_us: float = 0.0

    def record(self, seconds: float) -> None:
        micros = seconds * 1e6
        self.counts[_bucket(micros)] += 1
        self.count += 1
        self.max_us = max(self.max_us, micros)

    def percentile(self, fraction: float) -> float:
        """The latency (us) that ``fraction`` of the samples were at or below."""
        if not self.count:
            return math.nan
        wanted = fraction * self.count
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= wanted:
                return min(_upper_bound(bucket), self.max_us)
        return self.max_us

    def summary_ms(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50_ms": round(self.percentile(0.50) / 1000, 2),
            "p90_ms": round(self.percentile(0.90) / 1000, 2),
            "p99_ms": round(self.percentile(0.99) / 1000, 2),
            "max_ms": round(self.max_us / 1000, 2),
        }

    def to_json(self) -> dict[str, Any]:
        return {"counts": {str(k): v for k, v in self.counts.items()}, "max_us": self.max_us}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Histogram:
        counts = Counter({int(k): int(v) for k, v in raw["counts"].items()})
        return cls(counts, sum(counts.values()), float(raw["max_us"]))

    @classmethod
    def merged(cls, histograms: Iterable[Histogram]) -> Histogram:
        total = cls()
        for histogram in histograms:
            total.counts.update(histogram.counts)
            total.count += histogram.count
            total.max_us = max(total.max_us, histogram.max_us)
        return total
