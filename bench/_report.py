"""Comparisons between PyComms and the baselines, the text report and the JSON document."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pycomms
from bench._results import Latency, Result, Throughput

PYCOMMS = "pycomms"
TITLES = {
    "events": "(a) events, publish() of 1",
    "batches": "(b) events, publish() of a batch",
    "requests-c1": "(c) request/reply, concurrency 1",
}


def title(workload: str) -> str:
    if workload in TITLES:
        return TITLES[workload]
    if workload.startswith("requests-c"):
        return f"(c) request/reply, concurrency {workload.removeprefix('requests-c')}"
    return workload


@dataclass(frozen=True, slots=True)
class Comparison:
    """PyComms against one baseline on one workload.

    ``ratio`` is pycomms / baseline: msgs/s for throughput (higher is better for
    PyComms), p50 latency for request/reply (lower is better for PyComms).
    ``overhead_us`` is PyComms' time per message minus the baseline's (throughput) or
    the p50 difference (latency), in microseconds; ``cpu_overhead_us`` the same for
    this process's CPU time per message (throughput only).
    """

    workload: str
    baseline: str
    metric: str
    ratio: float
    overhead_us: float
    cpu_overhead_us: float = 0.0


def compare(results: Sequence[Result]) -> list[Comparison]:
    """Every (workload, baseline) pair where both PyComms and the baseline succeeded."""
    ours = {r.workload: r for r in results if r.impl == PYCOMMS and r.ok}
    found: list[Comparison] = []
    for other in results:
        mine = ours.get(other.workload)
        if other.impl == PYCOMMS or not other.ok or mine is None:
            continue
        if isinstance(mine, Throughput) and isinstance(other, Throughput) and other.msgs_per_s > 0:
            found.append(
                Comparison(
                    other.workload,
                    other.impl,
                    "msgs_per_s",
                    mine.msgs_per_s / other.msgs_per_s,
                    mine.us_per_msg - other.us_per_msg,
                    mine.cpu_us_per_msg - other.cpu_us_per_msg,
                )
            )
        elif isinstance(mine, Latency) and isinstance(other, Latency) and other.p50_us > 0:
            found.append(
                Comparison(other.workload, other.impl, "p50_us", mine.p50_us / other.p50_us, mine.p50_us - other.p50_us)
            )
    return found


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
        "pycomms": pycomms.__version__,
    }


def render(results: Sequence[Result], comparisons: Sequence[Comparison], spreads: dict[tuple[str, str], float]) -> str:
    """The human-readable report, grouped by workload."""
    lines: list[str] = []
    workloads = list(dict.fromkeys(r.workload for r in results))
    by_pair = {(c.workload, c.baseline): c for c in comparisons}
    for workload in workloads:
        rows = [r for r in results if r.workload == workload]
        lines.append("")
        lines.append(title(workload))
        if isinstance(rows[0], Throughput):
            lines.append(
                f"  {'implementation':<20}{'msgs/s':>12}{'µs/msg':>10}{'cpu µs':>8}{'publish/s':>12}{'spread':>8}"
                "  pycomms vs it"
            )
        else:
            lines.append(
                f"  {'implementation':<20}{'p50 µs':>12}{'p99 µs':>10}{'':>8}{'req/s':>12}{'spread':>8}  pycomms vs it"
            )
        for row in rows:
            spread = spreads.get((row.impl, workload), 0.0)
            spread_text = f"{spread * 100:6.0f}%" if spread else "     - "
            comparison = by_pair.get((workload, row.impl))
            if not row.ok:
                lines.append(f"  {row.impl:<20}FAILED: {row.error}")
                continue
            if isinstance(row, Throughput):
                publish_rate = row.count / row.publish_s if row.publish_s else 0.0
                figures = (
                    f"{row.msgs_per_s:>12,.0f}{row.us_per_msg:>10.1f}{row.cpu_us_per_msg:>8.1f}"
                    f"{publish_rate:>12,.0f}{spread_text:>8}"
                )
                versus = (
                    f"  {comparison.ratio:5.2f}x throughput, {comparison.overhead_us:+.1f} µs/msg" if comparison else ""
                )
            else:
                figures = f"{row.p50_us:>12,.0f}{row.p99_us:>10,.0f}{'':>8}{row.req_per_s:>12,.0f}{spread_text:>8}"
                versus = f"  {comparison.ratio:5.2f}x p50, {comparison.overhead_us:+.0f} µs" if comparison else ""
            lines.append(f"  {row.impl:<20}{figures}{versus}")
    return "\n".join(lines)


def document(
    *,
    url: str,
    params: dict[str, Any],
    implementations: Sequence[tuple[str, str]],
    skipped: Sequence[tuple[str, str]],
    results: Sequence[Result],
    runs: dict[tuple[str, str], list[Result]],
    comparisons: Sequence[Comparison],
    best: Sequence[Result],
    started_at: str,
    ok: bool,
) -> dict[str, Any]:
    """Everything measured, as one JSON-ready document.

    ``results`` and ``comparisons`` use each implementation's median run; ``best_runs``
    and ``best_comparisons`` its least disturbed one (useful on a noisy machine).
    """
    return {
        "tool": "pycomms-bench",
        "format": 1,
        "started_at": started_at,
        "url": url,
        "machine": machine(),
        "params": params,
        "implementations": [{"name": n, "description": d} for n, d in implementations],
        "skipped": [{"name": n, "reason": r} for n, r in skipped],
        "results": [
            {**r.to_dict(), "runs": [x.to_dict() for x in runs.get((r.impl, r.workload), [])]} for r in results
        ],
        "best_runs": [b.to_dict() for b in best],
        "best_comparisons": [asdict(c) for c in compare(best)],
        "comparisons": [asdict(c) for c in comparisons],
        "ok": ok,
    }
