"""``python -m bench.scaling``: a consumer service run with ``pycomms run --workers N``,
fed workload (a) by publishers in this (separate) process, for each N asked.

    python -m bench.scaling --url redis://localhost:6379/0 --workers 1,2 --repeat 3

For each round and each N: a fresh namespace; ``pycomms run bench/_scaling_worker.py:service
--workers N`` started and awaited in presence (N nodes); a warm-up; then ``--events``
events, each published alone by one of ``--publishers`` tasks; the run ends when the
workers have reported (`Tally` events) every sequence number once. The rate is events
over the time from the first publish to the last report. The median run of each N is
reported, with the ratio to the first N.

``--work-us US`` gives the handler US microseconds of CPU work per event (default 0:
workload (a)'s handler, which does nothing). With nothing to do, a consumer is rarely
what limits the rate; with work, it is, and that is what ``--workers`` is for.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pycomms
from bench._messages import make_events
from bench._pycomms import fresh_namespace
from bench._run import publish_all
from bench._scaling_worker import Tally
from bench._tracker import Tracker
from pycomms import Service
from pycomms.spi import redact_url

WORKER = Path(__file__).with_name("_scaling_worker.py")
ROOT = Path(__file__).resolve().parent.parent  # where `bench` imports from, for the workers
START_TIMEOUT = 120.0


class BusPublisher:
    """`publish_all`'s session: one event per ``publish`` on the bench's own bus."""

    def __init__(self, bus: pycomms.Bus) -> None:
        self._bus = bus

    async def publish(self, events: Sequence[pycomms.Event]) -> None:
        await self._bus.publish(*events)


class Progress:
    """When the reports arrived: (time, events reported so far), for the steady-state rate."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def mark(self, total: int) -> None:
        self.marks.append((time.perf_counter(), total))

    def steady(self, events: int) -> tuple[float, float, int]:
        """(start, end, events reported) between 10% and 90% of ``events`` reported:
        the workers' start-up (one may start later than another) and the last flush
        stay outside."""
        low = next(m for m in self.marks if m[1] >= events * 0.1)
        high = next(m for m in self.marks if m[1] >= events * 0.9)
        if high is low:  # a run so short that one report holds 10 % to 90 %
            low, high = self.marks[0], self.marks[-1]
        return low[0], high[0], max(high[1] - low[1], 1)


def _stat(pid: int | str) -> tuple[int, str, int] | None:
    """(parent pid, command name, CPU ticks so far: user + system) of process ``pid``
    (Linux ``/proc``), or None if it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, tail = stat.rsplit(")", 1)
    fields = tail.split()  # from the state on: ppid is field 4, utime and stime 14 and 15
    return int(fields[1]), head[head.index("(") + 1 :], int(fields[11]) + int(fields[12])


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes ``pids``; a process that has gone counts
    nothing."""
    return sum(stat[2] for pid in pids if (stat := _stat(pid)) is not None) / os.sysconf("SC_CLK_TCK")


# The server processes of each scheme's broker, when it runs on this machine.
BROKER_PROCESSES = {
    "redis": ("redis-server",),
    "amqp": ("beam.smp",),
    "postgresql": ("postgres",),
    "mysql": ("mariadbd", "mysqld"),
    "mariadb": ("mariadbd", "mysqld"),
    "nats": ("nats-server",),
    "mqtt": ("mosquitto",),
}


def broker_processes(url: str) -> tuple[str, ...]:
    """The names of ``url``'s broker processes (``rediss``/``amqps``/… as without TLS,
    ``postgresql+asyncpg`` as ``postgresql``)."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    return BROKER_PROCESSES.get(scheme, BROKER_PROCESSES.get(scheme.removesuffix("s"), ()))


def _processes() -> list[tuple[int, int, str, int]]:
    """(pid, parent pid, command name, CPU ticks so far) of every process."""
    return [(int(entry), *stat) for entry in os.listdir("/proc") if entry.isdigit() and (stat := _stat(entry))]


class CpuSampler:
    """Every `EVERY` seconds, the CPU time so far of the workers (the ``pycomms run``
    process and its children), of the broker's processes (by name, `BROKER_PROCESSES`;
    none if the broker is elsewhere) and of this process: how the two cores were shared
    while the backlog drained."""

    EVERY = 0.1

    def __init__(self, root: int, broker: Sequence[str]) -> None:
        self._root, self._broker = root, set(broker)
        self._tick = os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, float, float, float]] = []  # time, workers, broker, harness
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            workers = broker = 0
            for pid, parent, name, ticks in _processes():
                if pid == self._root or parent == self._root:
                    workers += ticks
                elif name in self._broker:
                    broker += ticks
            now = time.perf_counter()
            self.samples.append((now, workers / self._tick, broker / self._tick, time.process_time()))
            await asyncio.sleep(self.EVERY)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def between(self, start: float, end: float) -> tuple[float, ...]:
        """CPU seconds (workers, broker, harness) spent from ``start`` to ``end``,
        interpolated between the samples around each."""
        return tuple(b - a for a, b in zip(self._at(start), self._at(end), strict=True))

    def _at(self, when: float) -> tuple[float, ...]:
        times = [sample[0] for sample in self.samples]
        i = min(max(bisect.bisect_left(times, when), 1), len(times) - 1)
        (t0, *v0), (t1, *v1) = self.samples[i - 1], self.samples[i]
        share = (when - t0) / (t1 - t0) if t1 > t0 else 0.0
        return tuple(a + (b - a) * share for a, b in zip(v0, v1, strict=True))


async def worker_pids(bus: pycomms.Bus) -> list[int]:
    return [n.pid for n in await bus.nodes() if "bench" in n.services]


async def start_workers(url: str, workers: int, work_us: int, gate: str = "") -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pycomms",
        "--log-level",
        "warning",
        "run",
        f"{WORKER}:service",
        "--workers",
        str(workers),
        "--url",
        url,
        "--grace",
        "5",
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, "BENCH_WORK_US": str(work_us), "BENCH_GATE": gate},
    )


async def stop_workers(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    await proc.wait()


async def await_workers(bus: pycomms.Bus, proc: asyncio.subprocess.Process, workers: int) -> None:
    """Until ``workers`` nodes of the "bench" service that ``proc`` started (itself, or its
    children under a supervisor) are in presence; an earlier run's node still listed does
    not count."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        ours = {proc.pid} | {pid for pid, parent, _, _ in _processes() if parent == proc.pid}
        if len([n for n in await bus.nodes() if "bench" in n.services and n.pid in ours]) >= workers:
            return
        if proc.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the {workers} worker(s) did not show up in presence")
        await asyncio.sleep(0.2)  # presence has no event to await


async def one_run(
    url: str, workers: int, mode: str, events: int, publishers: int, warmup: int, timeout: float, work_us: int
) -> float:
    """Events per second handled by ``workers`` worker processes (raises on any loss).

    ``live``: workload (a) end to end, first publish to last report, workers running.
    ``backlog``: the events of workload (a) published while the workers are stopped,
    then the workers started: the steady-state rate at which they drain them."""
    namespace = fresh_namespace()
    tracker = Tracker()
    progress = Progress()
    tally = Service("tally", concurrency=1)  # one at a time: the marks stay in order

    @tally.on(Tally)
    async def on_tally(report: Tally) -> None:
        for seq in report.seqs:
            tracker.hit(seq)
        progress.mark(tracker.unique)

    payload = make_events(max(events, warmup))
    broker = broker_processes(url)
    sampler: CpuSampler | None = None
    gates = ""
    worker_url = f"{url}{'&' if '?' in url else '?'}namespace={namespace}"
    async with pycomms.connect(url, services=[tally], name="bench-publisher", namespace=namespace) as bus:
        publisher = BusPublisher(bus)
        proc = await start_workers(worker_url, workers, work_us)
        try:
            await await_workers(bus, proc, workers)
            tracker.reset(warmup)
            await publish_all(publisher, payload[:warmup], publishers, 1)
            if not await tracker.wait(timeout):
                raise RuntimeError(f"warm-up: {tracker.unique} of {warmup} handled")
            tracker.reset(events)
            progress.marks.clear()
            if mode == "backlog":
                await stop_workers(proc)
                await publish_all(publisher, payload[:events], publishers, 1)
                gates = tempfile.mkdtemp(prefix="bench-gate-")
                gate = Path(gates) / "open"
                proc = await start_workers(worker_url, workers, work_us, str(gate))
                await await_workers(bus, proc, workers)
                sampler = CpuSampler(proc.pid, broker)
                gate.touch()
                started = published = time.perf_counter()
            else:
                pids = await worker_pids(bus)
                cpu_before = cpu_seconds(pids)
                started = time.perf_counter()
                await publish_all(publisher, payload[:events], publishers, 1)
                published = time.perf_counter()
            if not await tracker.wait(timeout):
                raise RuntimeError(f"{tracker.unique} of {events} handled within {timeout}s")
            if tracker.duplicates or tracker.strays:
                raise RuntimeError(f"{tracker.duplicates} duplicate(s), {tracker.strays} stray(s)")
            if sampler is not None:
                await sampler.stop()
                start, end, counted = progress.steady(events)
                rate = counted / max(end - start, 1e-9)
                spent = [cpu / counted * 1e6 for cpu in sampler.between(start, end)]
                reports = sum(1 for mark in progress.marks if start <= mark[0] <= end)
                short = f" (only {reports} report(s) in {end - start:.2f}s: too short to read)" if reports < 5 else ""
                print(
                    f"    workers={workers}: {rate:8.0f} events/s draining the backlog (10%-90%); CPU µs per "
                    f"event: workers {spent[0]:.0f}, broker {spent[1]:.0f}, harness {spent[2]:.0f}{short}",
                    flush=True,
                )
            else:
                rate = events / (tracker.finished_at - started)
                side = events / max(published - started, 1e-9)
                cpu_us = (cpu_seconds(pids) - cpu_before) / events * 1e6
                print(
                    f"    workers={workers}: {rate:8.0f} events/s end to end (publish side {side:.0f}/s; "
                    f"workers' CPU {cpu_us:.0f} µs per event)",
                    flush=True,
                )
            return rate
        finally:
            if sampler is not None:
                await sampler.stop()
            await stop_workers(proc)
            if gates:
                shutil.rmtree(gates, ignore_errors=True)
            await bus.close(grace=2)
            admin = await pycomms.connect(url, name="bench-cleanup", namespace=namespace)
            await admin.drop_namespace(force=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="a cross-process backend URL (redis://, amqp://, postgresql://)")
    p.add_argument("--workers", default="1,2", help="worker counts to compare, the first is the reference")
    p.add_argument("--mode", choices=["live", "backlog"], default="live", help="see the module's docstring")
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--publishers", type=int, default=64)
    p.add_argument("--warmup", type=int, default=1_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument("--work-us", type=int, default=0, help="CPU microseconds of work per event in the handler")
    args = p.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    print(
        f"bench.scaling {redact_url(args.url)}: {args.mode}, workers {counts}, events={args.events} "
        f"publishers={args.publishers} repeat={args.repeat} work-us={args.work_us}, {os.cpu_count()} cores",
        flush=True,
    )
    rates: dict[int, list[float]] = {n: [] for n in counts}
    for round_index in range(args.repeat):
        print(f"  round {round_index + 1}/{args.repeat}", flush=True)
        for n in counts:
            rate = asyncio.run(
                one_run(args.url, n, args.mode, args.events, args.publishers, args.warmup, args.timeout, args.work_us)
            )
            rates[n].append(rate)
    reference = statistics.median(rates[counts[0]])
    print("\n| workers | median events/s | runs | ratio to " + f"{counts[0]} |")
    print("|---|---|---|---|")
    for n in counts:
        median = statistics.median(rates[n])
        runs = ", ".join(f"{r:.0f}" for r in rates[n])
        print(f"| {n} | {median:.0f} | {runs} | {median / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
