"""Record a real run's metrics and render docs/dashboards/pycomms.json's panels from them.

    python pycomms_otel/tools/dashboard_run.py record URL SAMPLES.jsonl [--seconds 60]
    python pycomms_otel/tools/dashboard_run.py render SAMPLES.jsonl OUT.html

``record`` starts ``pycomms run otel_app:services --metrics-port`` (tests/otel/otel_app.py)
on URL, publishes orders at a changing rate with one burst of `BURST` at once (every
tenth charge fails: retries, dead letters; the burst makes a backlog), and scrapes
``/metrics`` once a second into SAMPLES (one JSON line each).
``render`` computes each panel of the dashboard JSON the way its PromQL does (``rate``
over 10 s, ``histogram_quantile`` interpolating inside the bucket) and writes an HTML
page of SVG charts; headless Chromium then takes the screenshot. Grafana is not used:
the panels are the dashboard's, the drawing is this script's.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 10.0
BURST = 3000
Series = dict[str, list[tuple[float, float]]]


def record(url: str, out: Path, seconds: float, port: int) -> None:
    sys.path[:0] = [str(ROOT / "tests" / "otel"), str(ROOT / "tests" / "support")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path[:2])}
    command = [sys.executable, "-m", "pycomms", "run", "otel_app:services", "--url", url]
    worker = subprocess.Popen([*command, "--metrics-port", str(port), "--metrics-host", "127.0.0.1"], env=env)
    try:
        asyncio.run(_drive(url, out, seconds, port))
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        asyncio.run(_drop(url))


async def _drop(url: str) -> None:
    import pycomms

    async with pycomms.connect(url) as bus:
        await bus.drop_namespace(force=True)


async def _drive(url: str, out: Path, seconds: float, port: int) -> None:
    from otel_messages import OrderPlaced

    import pycomms

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    for _ in range(100):
        try:
            await asyncio.to_thread(scrape)
            break
        except OSError:
            await asyncio.sleep(0.2)
    async with pycomms.connect(url) as bus:
        start = time.monotonic()
        order = 0

        async def load() -> None:
            nonlocal order
            burst_at = seconds * 0.75
            while (elapsed := time.monotonic() - start) < seconds:
                if elapsed >= burst_at:
                    burst_at = float("inf")
                    await bus.publish(*(OrderPlaced(order=order + n) for n in range(1, BURST + 1)))
                    order += BURST
                rate = 40 if elapsed < seconds / 3 else (160 if elapsed < 2 * seconds / 3 else 80)
                order += 1
                await bus.publish(OrderPlaced(order=order))
                await asyncio.sleep(1 / rate)

        task = asyncio.create_task(load())
        with out.open("w") as sink:
            while not task.done():
                text = await asyncio.to_thread(scrape)
                sink.write(json.dumps({"t": time.monotonic() - start, "metrics": text}) + "\n")
                await asyncio.sleep(1.0)
            await task
            await asyncio.sleep(2.0)
            text = await asyncio.to_thread(scrape)
            sink.write(json.dumps({"t": time.monotonic() - start, "metrics": text}) + "\n")


def _samples(path: Path) -> list[tuple[float, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    rows = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(row["metrics"]):
            for s in family.samples:
                values[(s.name, tuple(sorted(s.labels.items())))] = s.value
        rows.append((row["t"], values))
    return rows


def _rate(rows: list[Any], name: str, by: tuple[str, ...], where: Callable[[dict[str, str]], bool]) -> Series:
    """``sum by (by) (rate(name[10s]))``."""
    out: Series = defaultdict(list)
    for i, (t, values) in enumerate(rows):
        j = next((k for k in range(i, -1, -1) if t - rows[k][0] >= WINDOW), None)
        if j is None:
            continue
        t0, old = rows[j]
        sums: dict[str, float] = defaultdict(float)
        for (n, labels), v in values.items():
            ld = dict(labels)
            if n == name and where(ld):
                sums[" ".join(ld.get(b, "") for b in by)] += max(0.0, v - old.get((n, labels), 0.0)) / (t - t0)
        for key, v in sums.items():
            out[key].append((t, v))
    return out


def _gauge(rows: list[Any], name: str, by: tuple[str, ...]) -> Series:
    out: Series = defaultdict(list)
    for t, values in rows:
        sums: dict[str, float] = defaultdict(float)
        for (n, labels), v in values.items():
            if n == name:
                sums[" ".join(dict(labels).get(b, "") for b in by)] += v
        for key, v in sums.items():
            out[key].append((t, v))
    return out


def _quantile(rows: list[Any], q: float, name: str, by: str) -> Series:
    """``histogram_quantile(q, sum by (le, by) (rate(name_bucket[10s])))``."""
    out: Series = defaultdict(list)
    for i, (t, values) in enumerate(rows):
        j = next((k for k in range(i, -1, -1) if t - rows[k][0] >= WINDOW), None)
        if j is None:
            continue
        old = rows[j][1]
        buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for (n, labels), v in values.items():
            if n == f"{name}_bucket":
                ld = dict(labels)
                buckets[ld.get(by, "")][float(ld["le"])] += v - old.get((n, labels), 0.0)
        for key, counts in buckets.items():
            bounds = sorted(counts)
            total = counts[bounds[-1]]
            if total <= 0:
                continue
            rank, lower, below = q * total, 0.0, 0.0
            for le in bounds:
                if counts[le] >= rank:
                    upper = le if le != float("inf") else lower
                    inside = counts[le] - below
                    value = lower + (upper - lower) * ((rank - below) / inside if inside else 0)
                    out[f"p{round(q * 100)} {key}"].append((t, value))
                    break
                lower, below = le, counts[le]
    return out


def panels(rows: list[Any]) -> list[tuple[str, str, Series]]:
    """The dashboard's panels, by id, computed like their PromQL."""
    group = ("messaging_consumer_group_name",)
    errors = _rate(
        rows, "messaging_process_duration_seconds_count", (*group, "error_type"), lambda d: bool(d.get("error_type"))
    )
    retried = _rate(rows, "pycomms_messages_retried_total", group, lambda d: True)
    dead = _rate(rows, "pycomms_messages_dead_lettered_total", group, lambda d: True)
    return [
        (
            "ops",
            "",
            _rate(rows, "messaging_client_sent_messages_total", ("messaging_destination_name",), lambda d: True),
        ),
        ("ops", "", _rate(rows, "messaging_client_consumed_messages_total", group, lambda d: True)),
        (
            "s",
            "",
            {
                **_quantile(rows, 0.5, "messaging_process_duration_seconds", group[0]),
                **_quantile(rows, 0.99, "messaging_process_duration_seconds", group[0]),
            },
        ),
        ("s", "", _quantile(rows, 0.99, "messaging_client_operation_duration_seconds", "messaging_operation_name")),
        ("ops", "", errors),
        (
            "ops",
            "",
            {**{f"retried {k}": v for k, v in retried.items()}, **{f"dead-lettered {k}": v for k, v in dead.items()}},
        ),
        ("short", "", _gauge(rows, "pycomms_handlers_active", group)),
        ("short", "", _gauge(rows, "pycomms_messages_dead_lettered_total", (*group, "pycomms_dead_letter_reason"))),
        ("short", "", _gauge(rows, "pycomms_backlog", group)),
    ]


COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a"]


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value >= 0.001 or value == 0 else f"{value * 1e6:.0f} µs"
    if unit == "ops":
        return f"{value:.0f}/s" if value >= 10 else f"{value:.1f}/s"
    return f"{value:.0f}" if value == int(value) or value >= 10 else f"{value:.1f}"


def _svg(series: Series, unit: str, width: int = 660, height: int = 200) -> str:
    left, right, top, bottom = 62, 10, 10, 24
    points = [p for s in series.values() for p in s]
    if not points:
        return f'<svg width="{width}" height="{height}"><text x="20" y="40" fill="#8e8e8e">no data</text></svg>'
    t_max = max(p[0] for p in points)
    t_min = min(p[0] for p in points)
    y_max = max(p[1] for p in points) * 1.15 or 1.0
    sx = lambda t: left + (t - t_min) / max(t_max - t_min, 1e-9) * (width - left - right)  # noqa: E731
    sy = lambda v: top + (1 - v / y_max) * (height - top - bottom)  # noqa: E731
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for k in range(5):
        v = y_max * k / 4
        y = sy(v)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#2c3235"/>')
        label = _fmt(v, unit)
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" fill="#8e8e8e" font-size="11" text-anchor="end">{label}</text>'
        )
    for k in range(0, int(t_max) + 1, 10):
        if k >= t_min:
            parts.append(
                f'<text x="{sx(k):.1f}" y="{height - 6}" fill="#8e8e8e" font-size="11" text-anchor="middle">{k}s</text>'
            )
    for i, (_, pts) in enumerate(sorted(series.items())):
        path = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in pts)
        parts.append(f'<polyline fill="none" stroke="{COLORS[i % len(COLORS)]}" stroke-width="2" points="{path}"/>')
    parts.append("</svg>")
    return "".join(parts)


def render(samples: Path, out: Path) -> None:
    dashboard = json.loads((ROOT / "docs" / "dashboards" / "pycomms.json").read_text())
    rows = _samples(samples)
    cells = []
    for panel, (unit, _, series) in zip(dashboard["panels"], panels(rows), strict=True):
        legend = "".join(
            f'<span><i style="background:{COLORS[i % len(COLORS)]}"></i>{html.escape(k.strip() or "all")}</span>'
            for i, k in enumerate(sorted(series))
        )
        title = html.escape(panel["title"])
        cells.append(f'<div class="panel"><h3>{title}</h3>{_svg(series, unit)}<div class="legend">{legend}</div></div>')
    out.write_text(
        "<!doctype html><meta charset=utf-8><style>"
        "body{background:#111217;color:#d8d9da;font:13px Inter,Helvetica,Arial,sans-serif;margin:12px}"
        "h1{font-size:18px;margin:4px 8px 10px}h1 small{color:#8e8e8e;font-weight:normal;font-size:12px}"
        ".grid{display:grid;grid-template-columns:1fr 1fr;gap:8px}"
        ".panel{background:#181b1f;border:1px solid #2c3235;border-radius:3px;padding:6px 8px}"
        "h3{font-size:13px;margin:2px 0 4px;font-weight:500}.legend span{margin-right:14px;font-size:12px}"
        ".legend i{display:inline-block;width:12px;height:3px;margin:0 5px 3px 0;vertical-align:middle}"
        "</style><h1>PyComms <small>docs/dashboards/pycomms.json, panels computed from /metrics scraped every 1 s "
        f"during a {rows[-1][0]:.0f} s run of pycomms run on redis://, fed orders by another process "
        f"at a rising, then falling rate, with a burst of {BURST} orders at once at 3/4 of the run; "
        "every tenth charge fails (rate window 10 s; drawn by "
        "pycomms_otel/tools/dashboard_run.py, not Grafana)</small></h1><div class=grid>" + "".join(cells) + "</div>"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("url")
    rec.add_argument("samples", type=Path)
    rec.add_argument("--seconds", type=float, default=60.0)
    rec.add_argument("--port", type=int, default=9464)
    ren = sub.add_parser("render")
    ren.add_argument("samples", type=Path)
    ren.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "record":
        record(args.url, args.samples, args.seconds, args.port)
    else:
        render(args.samples, args.out)


if __name__ == "__main__":
    main()
