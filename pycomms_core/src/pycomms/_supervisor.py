"""``pycomms run --workers N`` and ``--reload``: a supervisor of worker processes.

The supervisor holds no bus. It starts each worker as a fresh ``pycomms run`` process
(fork and exec: nothing of the supervisor's state is shared) with a worker index, which
the worker adds to its node name so that presence shows every worker, and a pipe on
which the worker says it is ready (its bus is open and its services run).

- A worker that dies is started again, after a delay that doubles with each death in
  a row (`Backoff`), logged. A worker that ran for a while starts a fresh series.
- A worker that dies before it was ready failed at start. When one slot fails at start
  `START_ATTEMPTS` times in a row, the supervisor stops the others and exits 1: a
  worker that cannot start (bad URL, broker down, broken code) is not retried forever.
- SIGINT and SIGTERM are forwarded to every worker, which closes gracefully within its
  ``--grace``; a worker still running ``grace + CLOSE_BOUND + KILL_MARGIN`` seconds
  later is killed. A second signal (after `REPEAT_WINDOW`) kills the workers at once.
- ``--reload``: one worker; when a Python file under the watched directories changes,
  the worker is stopped gracefully and started again. A worker that fails at start
  then waits for the next change instead of giving up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ._errors import PyCommsError
from ._service import Service
from .spi import CLOSE_BOUND

log = logging.getLogger("pycomms.supervisor")

START_ATTEMPTS = 3
"""Starts in a row that may fail (exit before ready) before the supervisor gives up."""
KILL_MARGIN = 5.0
"""Seconds past a worker's ``grace + CLOSE_BOUND`` before it is killed."""
REPEAT_WINDOW = 1.0
"""A second SIGINT/SIGTERM this soon after the first is the same one twice (sent to the
process and to its group), not a user insisting; a later one kills the workers."""
STABLE_AFTER = 30.0
"""A worker that was ready this long starts a fresh backoff series when it dies."""


@dataclass
class Backoff:
    """Delays before restarting one slot's worker: ``base * 2**(n-1)``, at most ``cap``."""

    base: float = 0.25
    cap: float = 30.0
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        return float(min(self.base * 2 ** (self.failures - 1), self.cap))

    def reset(self) -> None:
        self.failures = 0


@dataclass
class Slot:
    """One worker position: its current process and its history."""

    index: int
    process: asyncio.subprocess.Process | None = None
    backoff: Backoff = field(default_factory=Backoff)
    start_failures: int = 0
    restarts: int = 0


class Supervisor:
    """Runs ``workers`` copies of ``pycomms ARGV`` until a signal, restarting the dead.

    ``argv`` is the command line of ``pycomms`` as given (the workers ignore its
    ``--workers`` and ``--reload``); ``grace`` is the workers' ``--grace``.
    """

    def __init__(
        self, argv: Sequence[str], *, workers: int, grace: float, reload_dirs: Sequence[Path] | None = None
    ) -> None:
        if workers < 1:
            raise PyCommsError(f"--workers must be at least 1, got {workers}")
        self._argv = list(argv)
        self._slots = [Slot(i) for i in range(1, workers + 1)]
        self._grace = max(0.0, grace)
        self._reload_dirs = list(reload_dirs or ())
        self._stopping = asyncio.Event()  # bound to the loop of `run` at first use
        self._gave_up: str | None = None
        self._signalled_at = 0.0
        self._reloaded = asyncio.Event()

    def run(self) -> int:
        """Supervise until stopped; 0 after a clean stop, 1 when workers kept failing at start."""
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        mode = "reloading on changes" if self._reload_dirs else f"{len(self._slots)} worker(s)"
        log.info("supervisor pid %d: %s; Ctrl-C to stop", os.getpid(), mode)
        watcher = asyncio.create_task(self._watch(self._reload_dirs)) if self._reload_dirs else None
        try:
            await asyncio.gather(*(self._keep(slot) for slot in self._slots))
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if self._gave_up is not None:
            log.error("supervisor: %s; giving up", self._gave_up)
            return 1
        log.info("supervisor: every worker stopped")
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        now = time.monotonic()
        if self._stopping.is_set():
            if now - self._signalled_at < REPEAT_WINDOW:
                return  # the same signal sent to the process group as well (Ctrl-C, timeout(1))
            log.warning("supervisor: %s again; killing the workers now", sig.name)
            self._signal_all(signal.SIGKILL)
            return
        log.info("supervisor: %s received; stopping the workers (grace %.1fs)", sig.name, self._grace)
        self._signalled_at = now
        self._stopping.set()
        self._signal_all(sig)

    def _signal_all(self, sig: signal.Signals) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(sig)

    def _stop_all(self, reason: str) -> None:
        self._gave_up = reason
        self._stopping.set()
        self._signal_all(signal.SIGTERM)

    async def _keep(self, slot: Slot) -> None:
        """Start ``slot``'s worker, and again each time it dies, until stopping."""
        while not self._stopping.is_set():
            started = time.monotonic()
            process, ready_at = await self._start(slot)
            code = await self._wait(slot.index, process)
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started
            if ready_at is None:
                slot.start_failures += 1
                log.error(
                    "worker %d (pid %s) failed at start (exit code %s after %.1fs), %d time(s) in a row",
                    slot.index,
                    process.pid,
                    code,
                    lived,
                    slot.start_failures,
                )
                if self._reload_dirs:
                    if not self._reloaded_now():  # not stopped by a change made while it started
                        await self._next_change("waiting for a change to start it again")
                    continue
                if slot.start_failures >= START_ATTEMPTS:
                    self._stop_all(f"worker {slot.index} failed at start {slot.start_failures} times in a row")
                    return
            else:
                slot.start_failures = 0
                if time.monotonic() - ready_at >= STABLE_AFTER:
                    slot.backoff.reset()
                if self._reload_dirs and self._reloaded_now():
                    continue  # stopped on purpose for a reload: start again at once
            delay = slot.backoff.next_delay()
            slot.restarts += 1
            log.warning(
                "worker %d exited with code %s after %.1fs; restarting it in %.2fs (restart %d)",
                slot.index,
                code,
                lived,
                delay,
                slot.restarts,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _start(self, slot: Slot) -> tuple[asyncio.subprocess.Process, float | None]:
        """Start ``slot``'s worker: its process, and the time it said it was ready (None
        if it exited first)."""
        read_fd, write_fd = os.pipe()
        try:
            process = slot.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pycomms",
                *self._argv,
                "--worker-index",
                str(slot.index),
                "--ready-fd",
                str(write_fd),
                pass_fds=(write_fd,),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            os.close(write_fd)
        log.info("worker %d started: pid %d", slot.index, process.pid)
        if await _read_one(read_fd):
            log.info("worker %d (pid %d) is ready", slot.index, process.pid)
            return process, time.monotonic()
        return process, None

    async def _wait(self, index: int, process: asyncio.subprocess.Process) -> int:
        """Wait for worker ``index`` to exit; once stopping, kill it after its deadline."""
        exited = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                try:
                    async with asyncio.timeout(self._grace + CLOSE_BOUND + KILL_MARGIN):
                        await asyncio.shield(exited)
                except TimeoutError:
                    log.error("worker %d (pid %d) did not stop in time; killing it", index, process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            code: int = await exited
        finally:
            stopping.cancel()
            if not exited.done():
                exited.cancel()
        if self._stopping.is_set():
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(level, "worker %d (pid %d) stopped with exit code %s", index, process.pid, code)
        return code

    # --reload ----------------------------------------------------------------------------

    def _reloaded_now(self) -> bool:
        if self._reloaded.is_set():
            self._reloaded.clear()
            return True
        return False

    async def _next_change(self, why: str) -> None:
        log.info("supervisor: %s", why)
        self._reloaded.clear()
        changed = asyncio.ensure_future(self._reloaded.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        changed.cancel()
        stopping.cancel()
        self._reloaded.clear()

    async def _watch(self, dirs: Sequence[Path]) -> None:
        """Restart the worker when a Python file under ``dirs`` changes."""
        watchfiles = import_watchfiles()
        log.info("supervisor: watching %s for changes", ", ".join(str(d) for d in dirs))
        async for changes in watchfiles.awatch(*dirs, watch_filter=watchfiles.PythonFilter()):
            names = sorted({Path(path).name for _, path in changes})
            log.info("supervisor: %s changed; restarting the worker", ", ".join(names))
            self._reloaded.set()
            self._signal_all(signal.SIGTERM)


def import_watchfiles() -> Any:
    """The ``watchfiles`` module, or an error naming the extra that installs it."""
    try:
        import watchfiles
    except ImportError:
        raise PyCommsError(
            "--reload needs the watchfiles package: pip install 'pycomms-core[reload]' (or pip install watchfiles)"
        ) from None
    return watchfiles


def _pipe(fd: int) -> BinaryIO:
    """A file object for the read end ``fd`` (opening an fd does not block)."""
    return open(fd, "rb", buffering=0)  # the read transport owns and closes it


async def _read_one(fd: int) -> bytes:
    """One byte from the pipe ``fd`` (empty once every writer closed it), then close it."""
    reader = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), _pipe(fd)
    )
    try:
        return await reader.read(1)
    finally:
        transport.close()


# the ``run`` command's side -------------------------------------------------------------


def add_worker_options(run: argparse.ArgumentParser) -> None:
    """``--workers``, ``--reload``, ``--reload-dir`` and the two options the supervisor
    gives its workers (not shown in ``--help``)."""
    run.add_argument("--workers", type=int, default=1, help="worker processes to run and supervise (default: 1)")
    run.add_argument("--reload", action="store_true", help="development: restart on code change (needs watchfiles)")
    run.add_argument(
        "--reload-dir",
        action="append",
        type=Path,
        metavar="DIR",
        help="directory to watch with --reload (repeatable; default: the current one)",
    )
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    run.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)


def supervise_if_asked(args: argparse.Namespace) -> int | None:
    """Run the supervisor when ``--workers`` > 1 or ``--reload`` asks for one (its exit
    code), or None: this process is the worker."""
    if args.worker_index is not None:
        return None
    if args.reload and args.workers != 1:
        raise PyCommsError(f"--reload runs one worker; drop --workers {args.workers} (or --reload)")
    if args.workers < 1:
        raise PyCommsError(f"--workers must be at least 1, got {args.workers}")
    if args.workers == 1 and not args.reload:
        return None
    reload_dirs = None
    if args.reload:
        import_watchfiles()  # fail now, with the extra to install, not in the watcher task
        reload_dirs = [d.resolve() for d in args.reload_dir or [Path.cwd()]]
        missing = [str(d) for d in reload_dirs if not d.is_dir()]
        if missing:
            raise PyCommsError(f"--reload-dir: no such directory: {', '.join(missing)}")
    return Supervisor(args.argv, workers=args.workers, grace=args.grace, reload_dirs=reload_dirs).run()


def worker_name(args: argparse.Namespace, services: Sequence[Service]) -> str | None:
    """The node name: ``--name`` (or the services' names) plus ``-wN`` for worker N of a
    supervisor, so that presence tells the workers apart."""
    if args.worker_index is None:
        return args.name  # type: ignore[no-any-return]
    base = args.name or "+".join(s.name for s in services)
    return f"{base}-w{args.worker_index}"


def catch_early_signals() -> list[signal.Signals]:
    """Record SIGINT/SIGTERM that arrive while ``run`` connects, before `Bus.serve`
    installs its own handlers (which then replace these): without this, a worker told
    to stop while it starts would be killed by the signal instead of closing."""
    loop = asyncio.get_running_loop()
    caught: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, caught.append, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or not supported here
    return caught


def worker_ready(args: argparse.Namespace) -> None:
    """Tell the supervisor (if any) that this worker's bus is open and serving."""
    if args.ready_fd is None:
        return
    try:
        os.write(args.ready_fd, b"1")
        os.close(args.ready_fd)
    except OSError as exc:
        log.warning("could not tell the supervisor this worker is ready: %s", exc)
