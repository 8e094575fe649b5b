"""The PNG chart: throughput per implementation and workload, and request latency."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench._report import title
from bench._results import Latency, Result, Throughput


def draw(results: Sequence[Result], path: Path, heading: str) -> None:
    """Grouped bars (matplotlib, Agg canvas): msgs/s and CPU per message for (a) and (b);
    p50 and p99 for (c). Failed runs are left out."""
    impls = list(dict.fromkeys(r.impl for r in results))
    colours = {name: colormaps["tab10"](index % 10) for index, name in enumerate(impls)}
    throughput = [r for r in results if isinstance(r, Throughput) and r.ok]
    latency = [r for r in results if isinstance(r, Latency) and r.ok]
    panels: list[tuple[str, list[Result], str]] = []
    if throughput:
        panels.append(("msgs/s (end to end, higher is better)", list(throughput), "msgs_per_s"))
        panels.append(("CPU µs per message, this process (lower is better)", list(throughput), "cpu_us_per_msg"))
    if latency:
        panels.append(("request/reply p50 µs (lower is better)", list(latency), "p50_us"))
        panels.append(("request/reply p99 µs (lower is better)", list(latency), "p99_us"))
    if not panels:
        return
    columns = min(2, len(panels))
    rows_needed = (len(panels) + columns - 1) // columns
    figure = Figure(figsize=(6.4 * columns, 4.4 * rows_needed))
    FigureCanvasAgg(figure)  # the Agg canvas: no GUI backend, no pyplot state
    grid = figure.subplots(rows_needed, columns, squeeze=False)
    axes = [axis for row in grid for axis in row]
    for spare in axes[len(panels) :]:
        spare.set_visible(False)
    for axis, (label, rows, metric) in zip(axes, panels, strict=False):
        workloads = list(dict.fromkeys(r.workload for r in rows))
        present = [name for name in impls if any(r.impl == name for r in rows)]
        width = 0.8 / max(1, len(present))
        for offset, name in enumerate(present):
            xs: list[float] = []
            heights: list[float] = []
            for index, workload in enumerate(workloads):
                row = next((r for r in rows if r.impl == name and r.workload == workload), None)
                if row is not None:
                    xs.append(index + (offset - (len(present) - 1) / 2) * width)
                    heights.append(float(getattr(row, metric)))
            bars = axis.bar(xs, heights, width, label=name, color=colours[name])
            axis.bar_label(bars, labels=[_short(h) for h in heights], fontsize=7, padding=1)
        axis.margins(y=0.12)
        axis.set_xticks(range(len(workloads)), [title(w).replace(", ", ",\n", 1) for w in workloads], fontsize=8)
        axis.set_title(label, fontsize=10)
        if metric in ("p50_us", "p99_us"):
            axis.set_yscale("log")
        axis.legend(fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(heading, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    if value >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}"
