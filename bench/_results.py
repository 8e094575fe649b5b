"""Measured results and the small statistics they need."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class Throughput:
    """Workload (a) or (b): end to end from the first publish to the last handled."""

    impl: str
    workload: str
    ok: bool
    count: int = 0
    batch: int = 1
    elapsed_s: float = 0.0
    publish_s: float = 0.0
    cpu_s: float = 0.0
    duplicates: int = 0
    error: str | None = None

    @property
    def msgs_per_s(self) -> float:
        return self.count / self.elapsed_s if self.ok and self.elapsed_s > 0 else 0.0

    @property
    def us_per_msg(self) -> float:
        return self.elapsed_s / self.count * 1e6 if self.ok and self.count else 0.0

    @property
    def cpu_us_per_msg(self) -> float:
        """This process's CPU time (user + system) per message: less disturbed by other
        load than wall time, and for ``memory://`` the whole cost."""
        return self.cpu_s / self.count * 1e6 if self.ok and self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "msgs_per_s": round(self.msgs_per_s, 1),
            "us_per_msg": round(self.us_per_msg, 3),
            "cpu_us_per_msg": round(self.cpu_us_per_msg, 3),
        }


@dataclass(slots=True)
class Latency:
    """Workload (c): request/reply round trips at a given concurrency."""

    impl: str
    workload: str
    ok: bool
    concurrency: int = 1
    count: int = 0
    elapsed_s: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    mean_us: float = 0.0
    error: str | None = None

    @property
    def req_per_s(self) -> float:
        return self.count / self.elapsed_s if self.ok and self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "req_per_s": round(self.req_per_s, 1)}


Result = Throughput | Latency


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (``q`` in 0..1)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def headline(result: Result) -> float:
    """The figure repeats are ranked by, larger is better: msgs/s, or minus the p50."""
    return result.msgs_per_s if isinstance(result, Throughput) else -result.p50_us


def median_run(runs: list[Result]) -> Result:
    """The run to report out of repeats: any failure wins, else the median by speed."""
    failed = [r for r in runs if not r.ok]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=headline)
    return ordered[(len(ordered) - 1) // 2]


def best_run(runs: list[Result]) -> Result | None:
    """The least disturbed successful run (fastest; lowest p50), or None if all failed."""
    good = [r for r in runs if r.ok]
    return max(good, key=headline) if good else None


def spread(runs: list[Result]) -> float:
    """Relative spread (max/min - 1) of the repeats' headline figure, for the report."""
    values = [abs(headline(r)) for r in runs if r.ok]
    if len(values) < 2 or min(values) <= 0:
        return 0.0
    return max(values) / min(values) - 1.0
