"""The fault matrix (DESIGN §8, issue 11): every broker backend against four network
faults, for every call a user makes. Each cell asserts the documented error class
within the documented deadline plus a margin, that the error names the backend and
its host:port and shows no password, and that ``close(grace)`` returns in time.

Faults: (a) nothing listening (a free port); (b) a server that accepts and never
answers; (c) a link that goes silent mid-session (a proxy stops forwarding, sockets
stay open); (d) a link closed mid-session (the proxy closes every connection and
closes new ones at once). Operations: connect under every fault; under (c) and (d),
on a bus opened through the proxy with a service running, also publish, send,
request, nodes, dead_letters, replay, purge and close. A last cell per run,
``clean_exit``, fails on an error the event loop saw unhandled, a task left running
once every bus closed, or a namespace that could not be dropped.

Secrets: under (a) and (b) every URL carries a made-up password; under (c) and (d)
the service's own where it has one (RabbitMQ's ``guest``, checked as ``:guest@``
since it is also the user name) or one it ignores (PostgreSQL's trust auth). No error,
nor any exception it was raised from, may show it.

Budget, with ``connect_timeout=2&operation_timeout=2`` in every URL:

- connect, publish, send, nodes and the dead-letter calls: ``2 * deadline + MARGIN``
  (7 s), the deadline being ``connect_timeout`` for connect, ``operation_timeout``
  for the rest. Twice the deadline leaves room for a backend that spends it once on
  the TCP connection and once on the greeting; the margin (3 s, times
  ``$PYCOMMS_TEST_TIMEOUT_SCALE``) is for a loaded machine.
- request, with ``timeout=2 * operation_timeout``: `PublishError` (the publish's own
  deadline) or `RequestTimeout`, within ``timeout + MARGIN``. A `RequestTimeout` is
  core's and names no host; the naming check applies to the network errors only.
- close(grace=1): returns, without raising, within ``grace + CLOSE_BOUND + MARGIN``.

An operation still running after ``HANG_CAP`` is cancelled and reported as a hang.
Every scenario runs its operations concurrently, each on a bus of its own, in an event
loop on a thread of its own: a call that swallows cancellation cannot stall the test
run (the thread is abandoned and the cell fails).

Not here: ``tcp://`` is brokerless, so there is no server to stop answering; its
faults (a seed that is down or flooded, a wrong secret through seeds and through the
registry) are the tcp backend's own tests in tests/tcp/. ``sqlite://`` has no network
link at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from fault_proxy import FaultProxy, SilentServer, free_port
from shared_services import AMQP_URL, MQTT_URL, MYSQL_URL, NATS_URL, POSTGRES_URL, REDIS_URL

import pycomms
from pycomms import (
    Bus,
    Command,
    ConnectError,
    Event,
    Message,
    OperationError,
    PublishError,
    Request,
    RequestTimeout,
    Service,
)
from pycomms.spi import CLOSE_BOUND
from pycomms.testing import require_reachable, scale

CONNECT_TIMEOUT = 2.0
OPERATION_TIMEOUT = 2.0
MARGIN = 3.0 * scale()
REQUEST_TIMEOUT = 2 * OPERATION_TIMEOUT
CLOSE_GRACE = 1.0
HANG_CAP = 20.0 * scale()
"""An operation still running after this long is cancelled and reported as a hang."""
SETUP_CAP = 30.0 * scale()
SCENARIO_CAP = 120.0 * scale()
SECRET = "Pw-fault-7r1x"
SERVICE = "faulty"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SCENARIO_CAP + 60)]


class FaultPing(Event, name="faults.ping"):
    n: int


class FaultJob(Command, name="faults.job"):
    n: int


class FaultReply(Message, name="faults.reply"):
    n: int


class FaultAsk(Request[FaultReply], name="faults.ask"):
    n: int


def _service() -> Service:
    svc = Service(SERVICE)

    @svc.on
    async def ping(event: FaultPing) -> None:
        pass

    @svc.on
    async def job(command: FaultJob) -> None:
        pass

    @svc.on
    async def ask(req: FaultAsk) -> FaultReply:
        return FaultReply(n=req.n)

    return svc


@dataclasses.dataclass(frozen=True)
class Backend:
    """A broker backend: the real service's URL and how an error may name it."""

    base: str
    default_port: int
    names: tuple[str, ...]
    """Any of these in an error message names the backend (the URL's scheme first)."""
    password_ok: bool = True
    """The real service takes (ignores) a password we add: trust auth, no auth."""

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.base)
        return parts.hostname or "127.0.0.1", parts.port or self.default_port

    @property
    def scheme(self) -> str:
        return urlsplit(self.base).scheme

    def url(self, port: int, namespace: str, *, password: str | None, deadlines: bool = True) -> str:
        """This backend's URL on 127.0.0.1:``port``, with ``password`` when given (else
        the base URL's own), the namespace and the matrix's deadlines."""
        parts = urlsplit(self.base)
        user = parts.username or ""
        secret = password if password is not None else parts.password
        userinfo = f"{user}:{secret}@" if secret else (f"{user}@" if user else "")
        options = f"namespace={namespace}"
        if deadlines:
            options += f"&connect_timeout={CONNECT_TIMEOUT:g}&operation_timeout={OPERATION_TIMEOUT:g}"
        query = f"{parts.query}&{options}" if parts.query else options
        return parts._replace(netloc=f"{userinfo}127.0.0.1:{port}", query=query).geturl()


BACKENDS = {
    "redis": Backend(REDIS_URL, 6379, ("redis",), password_ok=False),
    "amqp": Backend(AMQP_URL, 5672, ("amqp",), password_ok=False),
    "postgresql": Backend(POSTGRES_URL, 5432, ("postgres",)),
    "mariadb": Backend(MYSQL_URL, 3306, ("mysql", "mariadb"), password_ok=False),
    "nats": Backend(NATS_URL, 4222, ("nats",)),
    "mqtt": Backend(MQTT_URL, 1883, ("mqtt",)),
}

BUS_OPERATIONS = ("publish", "send", "request", "nodes", "dead_letters", "replay", "purge", "close")
SCENARIOS: dict[str, tuple[str, ...]] = {
    "nothing_listening": ("connect", "clean_exit"),
    "never_answers": ("connect", "clean_exit"),
    "link_silent": ("connect", *BUS_OPERATIONS, "clean_exit"),
    "link_closed": ("connect", *BUS_OPERATIONS, "clean_exit"),
}
"""Operations per fault; ``clean_exit`` checks the whole run: no error left unhandled in
the event loop, no task left running once every bus closed, the namespace dropped."""

EXPECTED: dict[str, tuple[tuple[type[BaseException], ...], float]] = {
    "connect": ((ConnectError,), 2 * CONNECT_TIMEOUT + MARGIN),
    "publish": ((PublishError,), 2 * OPERATION_TIMEOUT + MARGIN),
    "send": ((PublishError,), 2 * OPERATION_TIMEOUT + MARGIN),
    "request": ((PublishError, RequestTimeout), max(REQUEST_TIMEOUT, 2 * OPERATION_TIMEOUT) + MARGIN),
    "nodes": ((OperationError,), 2 * OPERATION_TIMEOUT + MARGIN),
    "dead_letters": ((OperationError,), 2 * OPERATION_TIMEOUT + MARGIN),
    "replay": ((OperationError,), 2 * OPERATION_TIMEOUT + MARGIN),
    "purge": ((OperationError,), 2 * OPERATION_TIMEOUT + MARGIN),
    "close": ((), CLOSE_GRACE + CLOSE_BOUND + MARGIN),
}


@dataclasses.dataclass
class Outcome:
    """What one operation did under the fault."""

    elapsed: float | None = None
    """Seconds until it returned or raised; None when it never ended."""
    error: BaseException | None = None
    result: Any = None

    def describe(self) -> str:
        if self.elapsed is None:
            return f"did not end within {HANG_CAP:g}s (cancelled: a hang)"
        if self.error is not None:
            return f"raised {type(self.error).__name__} after {self.elapsed:.2f}s: {self.error}"
        return f"returned {self.result!r:.200} after {self.elapsed:.2f}s"


@dataclasses.dataclass
class Run:
    """One backend under one fault: the outcome of each operation."""

    port: int = 0
    """The port the URLs named (free port, silent server or proxy)."""
    secrets: tuple[str, ...] = ()
    """Texts no error may show: the URL's password (as ``:PASSWORD@`` when it is also
    the user name, as RabbitMQ's guest:guest)."""
    outcomes: dict[str, Outcome] = dataclasses.field(default_factory=dict)
    setup_error: str | None = None
    problems: list[str] = dataclasses.field(default_factory=list)
    """Unhandled errors the event loop reported, tasks left running, a failed clean-up:
    shown with every cell, failing ``clean_exit``."""


_runs: dict[tuple[str, str], Run] = {}


def _cells() -> list[Any]:
    return [
        pytest.param(backend, scenario, operation, id=f"{backend}-{scenario}-{operation}")
        for backend in BACKENDS
        for scenario, operations in SCENARIOS.items()
        for operation in operations
    ]


@pytest.mark.parametrize(("backend", "scenario", "operation"), _cells())
def test_fault(backend: str, scenario: str, operation: str) -> None:
    run = _run(backend, scenario)
    spec = BACKENDS[backend]
    outcome = run.outcomes.get(operation, Outcome())
    what = f"{backend} {scenario}: {operation} {outcome.describe()}"
    if operation == "clean_exit":
        what = f"{backend} {scenario}: clean_exit {'; '.join(run.problems) or 'nothing left'}"
    if run.setup_error is not None:
        what = f"{backend} {scenario}: set-up failed: {run.setup_error}"
    print(f"CELL {what}")
    if run.problems:
        print("problems:\n  " + "\n  ".join(run.problems))
    assert run.setup_error is None, what
    if operation == "clean_exit":
        assert not run.problems, f"{backend} {scenario}: " + "; ".join(run.problems)
        return
    classes, limit = EXPECTED[operation]
    assert outcome.elapsed is not None, what
    if operation == "close":
        assert outcome.error is None, f"close raised: {what}"
        assert outcome.elapsed <= limit, f"close took over grace + CLOSE_BOUND + margin = {limit:g}s: {what}"
        return
    assert outcome.error is not None, f"expected {_names(classes)}: {what}"
    assert isinstance(outcome.error, classes), f"expected {_names(classes)}: {what}"
    assert outcome.elapsed <= limit, f"over the deadline plus margin, {limit:g}s: {what}"
    _check_secrets(outcome.error, run.secrets, what)
    if not isinstance(outcome.error, RequestTimeout):
        message = str(outcome.error)
        assert any(name in message for name in spec.names), f"the error does not name the backend: {what}"
        assert f"127.0.0.1:{run.port}" in message, f"the error does not name 127.0.0.1:{run.port}: {what}"


def _names(classes: tuple[type[BaseException], ...]) -> str:
    return " or ".join(c.__name__ for c in classes)


def _check_secrets(error: BaseException, secrets: tuple[str, ...], what: str) -> None:
    """No text of the error or of its causes shows a secret."""
    seen: BaseException | None = error
    for _ in range(20):
        if seen is None:
            break
        for secret in secrets:
            assert secret not in str(seen), f"the password shows in the error or a cause ({seen!r}): {what}"
        seen = seen.__cause__ or seen.__context__


# running one scenario ------------------------------------------------------------------


def _run(backend: str, scenario: str) -> Run:
    """The scenario's run, made on first use and shared by its cells."""
    key = (backend, scenario)
    if key not in _runs:
        spec = BACKENDS[backend]
        if scenario in ("link_silent", "link_closed"):
            require_reachable(spec.base, spec.default_port)
        run = Run()
        thread = threading.Thread(target=_run_in_thread, args=(spec, scenario, run), daemon=True)
        thread.start()
        thread.join(SCENARIO_CAP)
        if thread.is_alive():
            run.problems.append(f"the scenario's loop was still running after {SCENARIO_CAP:g}s; abandoned")
        _runs[key] = run
    return _runs[key]


def _run_in_thread(spec: Backend, scenario: str, run: Run) -> None:
    def on_problem(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc, task = context.get("exception"), context.get("future") or context.get("task")
        where = f" (in {task!r:.300})" if task is not None else ""
        run.problems.append(f"{context.get('message')}: {exc!r}{where}" if exc else f"{context.get('message')}{where}")

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(on_problem)
        try:
            await SCENARIO_RUNNERS[scenario](spec, run, f"f{uuid.uuid4().hex[:10]}")
        finally:
            current = asyncio.current_task()
            left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
            if left:
                run.problems.append(f"tasks left running after every bus closed: {sorted(t.get_name() for t in left)}")

    try:
        asyncio.run(main())
    except Exception as exc:
        if run.outcomes:  # after the operations: cleaning up failed
            run.problems.append(f"the scenario ended with {type(exc).__name__}: {exc}")
        else:
            run.setup_error = run.setup_error or f"{type(exc).__name__}: {exc}"


async def _nothing_listening(spec: Backend, run: Run, namespace: str) -> None:
    run.port, run.secrets = free_port(), (SECRET,)
    url = spec.url(run.port, namespace, password=SECRET)
    run.outcomes.update(await _timed({"connect": lambda: _connect_op(url)}))


async def _never_answers(spec: Backend, run: Run, namespace: str) -> None:
    with SilentServer() as server:
        run.port, run.secrets = server.port, (SECRET,)
        url = spec.url(run.port, namespace, password=SECRET)
        run.outcomes.update(await _timed({"connect": lambda: _connect_op(url)}))


async def _link_silent(spec: Backend, run: Run, namespace: str) -> None:
    await _mid_session(spec, run, namespace, FaultProxy.silence)


async def _link_closed(spec: Backend, run: Run, namespace: str) -> None:
    await _mid_session(spec, run, namespace, FaultProxy.cut)


async def _mid_session(spec: Backend, run: Run, namespace: str, fault: Callable[[FaultProxy], object]) -> None:
    """Open one bus per operation through a proxy, check the link carries a request,
    break the link, run every operation at once, then clean up."""
    base = urlsplit(spec.base)
    if spec.password_ok:
        run.secrets = (SECRET,)
    elif base.password:
        run.secrets = (f":{base.password}@",) if base.password == base.username else (base.password,)
    buses: dict[str, Bus] = {}
    proxy = FaultProxy(spec.address).start()
    try:
        run.port = proxy.port
        url = spec.url(proxy.port, namespace, password=SECRET if spec.password_ok else None)
        try:  # the link carries traffic before the fault
            async with asyncio.timeout(SETUP_CAP):
                await _open_buses(url, buses)
                await asyncio.gather(*(bus.publish(FaultPing(n=0)) for bus in buses.values()))
                reply = await buses["request"].request(FaultAsk(n=7), timeout=SETUP_CAP / 2)
                assert reply == FaultReply(n=7), reply
        except BaseException as exc:
            run.setup_error = f"{type(exc).__name__}: {exc}"
            raise
        fault(proxy)
        run.outcomes.update(
            await _timed(
                {
                    "connect": lambda: _connect_op(url),
                    "publish": lambda: buses["publish"].publish(FaultPing(n=1)),
                    "send": lambda: buses["send"].send(FaultJob(n=1)),
                    "request": lambda: buses["request"].request(FaultAsk(n=1), timeout=REQUEST_TIMEOUT),
                    "nodes": lambda: buses["nodes"].nodes(),
                    "dead_letters": lambda: buses["dead_letters"].dead_letters(SERVICE),
                    "replay": lambda: buses["replay"].replay(SERVICE),
                    "purge": lambda: buses["purge"].purge(SERVICE),
                    "close": lambda: buses["close"].close(grace=CLOSE_GRACE),
                }
            )
        )
    finally:
        proxy.stop()  # every link ends: what is left closes quickly
        await _close_all(buses.values())
        await _drop_namespace(spec, namespace, run)


async def _open_buses(url: str, buses: dict[str, Bus]) -> None:
    """One after another: each connect must fit ``connect_timeout`` (2 s), and nine at once
    setting up JetStream streams on a loaded machine did not (nats link_silent, once in a
    fresh-clone run, 2026-12-07: "no response from stream")."""
    for operation in BUS_OPERATIONS:
        buses[operation] = await pycomms.connect(url, services=[_service()], name=f"faults-{operation}")


async def _connect_op(url: str) -> str:
    bus = await pycomms.connect(url, services=[_service()], name="faults-connect")
    await _close_all([bus])
    return f"an open bus ({bus!r})"


async def _timed(operations: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, Outcome]:
    """Run ``operations`` concurrently; each outcome with its time. One still running
    after `HANG_CAP` is cancelled and left with ``elapsed=None``."""
    outcomes = {name: Outcome() for name in operations}

    async def timed(name: str, call: Callable[[], Awaitable[Any]]) -> None:
        start = time.monotonic()
        try:
            outcomes[name].result = await call()
        except Exception as exc:
            outcomes[name].error = exc
        outcomes[name].elapsed = time.monotonic() - start

    tasks = [asyncio.ensure_future(timed(name, call)) for name, call in operations.items()]
    _done, pending = await asyncio.wait(tasks, timeout=HANG_CAP)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5.0)
    for outcome in outcomes.values():
        if outcome.elapsed is not None and outcome.elapsed > HANG_CAP:
            outcome.elapsed, outcome.error = None, None  # ended only when cancelled
    return outcomes


async def _close_all(buses: Any) -> None:
    closing = [asyncio.ensure_future(bus.close(grace=0)) for bus in list(buses)]
    if closing:
        await asyncio.wait(closing, timeout=CLOSE_BOUND + MARGIN)
        for task in closing:
            if task.done() and not task.cancelled():
                task.exception()


async def _drop_namespace(spec: Backend, namespace: str, run: Run) -> None:
    """Remove what the run left on the real service (`Bus.drop_namespace`, forced: the
    run's own nodes may still be leaving; default deadlines, the service is healthy); a
    failure is reported with the cells."""
    try:
        async with asyncio.timeout(30 * scale()):
            bus = await pycomms.connect(spec.url(spec.address[1], namespace, password=None, deadlines=False))
            try:
                await bus.drop_namespace(force=True)
            finally:
                await bus.close(grace=0)
    except Exception as exc:
        run.problems.append(f"dropping namespace {namespace} failed: {type(exc).__name__}: {exc}")


SCENARIO_RUNNERS: dict[str, Callable[[Backend, Run, str], Awaitable[None]]] = {
    "nothing_listening": _nothing_listening,
    "never_answers": _never_answers,
    "link_silent": _link_silent,
    "link_closed": _link_closed,
}
