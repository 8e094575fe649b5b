"""``python -m bench``: parse options, run every implementation, report, exit status."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from urllib.parse import urlsplit

from bench import baselines
from bench._impl import BATCHES, EVENTS, REQUESTS, Implementation
from bench._messages import make_events
from bench._pycomms import PyComms
from bench._report import PYCOMMS, Comparison, compare, document, render
from bench._results import Result, Throughput, best_run, median_run, spread
from bench._run import Params, run_latency, run_throughput
from pycomms.spi import redact_url

MEMORY_TARGET_US = 15.0
SMOKE = Params(events=500, requests=50, warmup=50, timeout=30.0)
WORKLOADS = (EVENTS, BATCHES, REQUESTS)


def parser(prog: str = "python -m bench") -> argparse.ArgumentParser:
    defaults = Params()
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark PyComms on one backend URL against named baselines, in one invocation.",
    )
    p.add_argument("--url", default="memory://bench", help="backend URL (default: memory://bench)")
    p.add_argument("--baselines", default="auto", help="auto (by URL scheme), none, or names separated by commas")
    p.add_argument("--events", type=int, help=f"events for workloads (a) and (b) (default {defaults.events})")
    p.add_argument("--publishers", type=int, help=f"concurrent publisher tasks (default {defaults.publishers})")
    p.add_argument("--concurrency", type=int, help=f"consumer concurrency (default {defaults.concurrency})")
    p.add_argument("--requests", type=int, help=f"requests per concurrency level in (c) (default {defaults.requests})")
    p.add_argument("--batch", type=int, help=f"events per publish() in (b) (default {defaults.batch})")
    p.add_argument("--warmup", type=int, help=f"warm-up events before each run (default {defaults.warmup})")
    p.add_argument("--timeout", type=float, help=f"seconds a run may take before it fails (default {defaults.timeout})")
    p.add_argument("--repeat", type=int, default=1, help="rounds, interleaved; the median run is reported (default 1)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)} (default: all)")
    p.add_argument("--json", type=Path, help="write all results to this JSON file")
    p.add_argument("--chart", type=Path, help="write a PNG chart to this file")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: exits non-zero if any workload fails")
    p.add_argument("-v", "--verbose", action="store_true", help="show PyComms' own log lines (warnings always)")
    return p


def params_from(args: argparse.Namespace) -> Params:
    base = SMOKE if args.smoke else Params()
    given = {
        name: getattr(args, name)
        for name in ("events", "publishers", "concurrency", "requests", "batch", "warmup", "timeout")
        if getattr(args, name) is not None
    }
    params = replace(base, **given)
    for name in ("events", "publishers", "concurrency", "requests", "batch"):
        if getattr(params, name) < 1:
            raise SystemExit(f"--{name} must be >= 1")
    return params


def shown(url: str) -> str:
    """``url`` with secrets redacted, keeping ``memory://`` as typed."""
    redacted = redact_url(url)
    return url if redacted.rstrip("/") == url.rstrip("/") else redacted


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme.lower().split("+", 1)[0]


async def measure(
    impls: Sequence[Implementation], workloads: Sequence[str], params: Params, repeat: int
) -> dict[tuple[str, str], list[Result]]:
    """Every implementation on every workload it offers, ``repeat`` interleaved rounds."""
    events = make_events(params.events)
    runs: dict[tuple[str, str], list[Result]] = {}
    for round_index in range(repeat):
        for workload in workloads:
            for impl in impls:
                if workload not in impl.workloads:
                    continue
                if workload == REQUESTS:
                    for concurrency in dict.fromkeys((1, params.concurrency)):
                        result: Result = await run_latency(impl, concurrency, params)
                        runs.setdefault((impl.name, result.workload), []).append(result)
                        _progress(round_index, repeat, result)
                else:
                    result = await run_throughput(impl, workload, params, events)
                    runs.setdefault((impl.name, workload), []).append(result)
                    _progress(round_index, repeat, result)
    return runs


def implementations(url: str, spec: str, scheme: str) -> tuple[list[Implementation], list[tuple[str, str]]]:
    """PyComms plus the selected baselines, and the baselines that cannot run here (why)."""
    try:
        names = baselines.select(spec, scheme)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    impls: list[Implementation] = [PyComms(url)]
    skipped: list[tuple[str, str]] = []
    for name in names:
        loaded = baselines.load(name, url)
        if isinstance(loaded, baselines.Unavailable):
            skipped.append((loaded.name, loaded.reason))
        else:
            impls.append(loaded)
    return impls, skipped


def _progress(round_index: int, repeat: int, result: Result) -> None:
    status = "ok" if result.ok else f"FAILED ({result.error})"
    prefix = f"[{round_index + 1}/{repeat}] " if repeat > 1 else ""
    print(f"  {prefix}{result.impl:<18} {result.workload:<14} {status}", flush=True)


def main(argv: Sequence[str] | None = None, prog: str = "python -m bench") -> int:
    args = parser(prog).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    params = params_from(args)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if unknown := [w for w in workloads if w not in WORKLOADS]:
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    scheme = scheme_of(args.url)
    impls, skipped = implementations(args.url, args.baselines, scheme)
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    print(f"pycomms bench {shown(args.url)}: {', '.join(i.name for i in impls)}", flush=True)
    print(
        f"  events={params.events} publishers={params.publishers} concurrency={params.concurrency} "
        f"batch={params.batch} requests={params.requests} repeat={args.repeat}",
        flush=True,
    )
    for name, reason in skipped:
        print(f"  skipped baseline {name}: {reason}", flush=True)
    runs = asyncio.run(measure(impls, workloads, params, args.repeat))
    results = [median_run(r) for r in runs.values()]
    best = [b for b in (best_run(r) for r in runs.values()) if b is not None]
    spreads = {key: spread(value) for key, value in runs.items()}
    comparisons = compare(results)
    explicit = args.baselines not in ("auto", "none")
    ok = all(r.ok for r in results) and not (explicit and skipped)

    print(render(results, comparisons, spreads))
    if scheme == "memory" and args.smoke:
        print("\n(smoke sizes: a check that every workload works, not a measurement)")
    elif scheme == "memory":
        print(summarize_memory(results, comparisons, "median run"))
        if args.repeat > 1:
            print(summarize_memory(best, compare(best), f"best of {args.repeat}"))
    print(f"\n{'OK' if ok else 'FAILED'}: {sum(r.ok for r in results)} of {len(results)} runs succeeded")

    if args.json:
        doc = document(
            url=shown(args.url),
            params={**asdict(params), "repeat": args.repeat, "workloads": workloads, "baselines": args.baselines},
            implementations=[(i.name, i.description) for i in impls],
            skipped=skipped,
            results=results,
            runs=runs,
            comparisons=comparisons,
            best=best,
            started_at=started_at,
            ok=ok,
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.chart:
        from bench._chart import draw  # matplotlib is loaded only when a chart is asked for

        pycomms_ok = any(r.ok for r in results if r.impl == PYCOMMS)
        heading = f"PyComms bench on {shown(args.url)} ({datetime.date.today()}, {_cpus()} cores)"
        draw(results, args.chart, heading if pycomms_ok else heading + " - pycomms failed")
        print(f"wrote {args.chart}")
    return 0 if ok else 1


def summarize_memory(results: Sequence[Result], comparisons: Sequence[Comparison], label: str) -> str:
    """The core-overhead lines for ``memory://``, against the issue's 15 µs target."""
    lines = ["", f"{label}:"]
    for result in results:
        if result.impl == PYCOMMS and isinstance(result, Throughput) and result.ok:
            verdict = "meets" if result.us_per_msg <= MEMORY_TARGET_US else "misses"
            lines.append(
                f"  core end to end, {result.workload}: {result.us_per_msg:.1f} µs per event "
                f"({verdict} the target of <= {MEMORY_TARGET_US:.0f} µs; CPU {result.cpu_us_per_msg:.1f} µs)"
            )
    for c in comparisons:
        if c.baseline == "queue" and c.metric == "msgs_per_s":
            lines.append(
                f"  core overhead, {c.workload}: {c.overhead_us:.1f} µs per event over the bare asyncio.Queue "
                f"hand-off (CPU {c.cpu_overhead_us:.1f} µs)"
            )
    return "\n".join(lines)


def _cpus() -> int:
    return os.cpu_count() or 1
