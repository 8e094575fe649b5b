"""``pycomms run --metrics-port N``: a small HTTP/1.1 endpoint on the worker's event
loop serving ``/metrics`` (Prometheus text, from the OpenTelemetry Prometheus
exporter), ``/healthz`` (the process answers) and ``/readyz`` (the bus is open, the
backend answers a presence query within 2 s and lists this node)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from pycomms import Bus, PyCommsError

log = logging.getLogger("pycomms.otel")

READY_TIMEOUT = 2.0
"""Seconds a readiness probe waits for the backend's presence answer."""
MAX_REQUEST_HEAD = 8192
"""Bytes of request line and headers read at most; a longer request is refused."""
READ_TIMEOUT = 5.0


def setup_metrics() -> None:
    """Instrument PyComms with a meter provider whose reader is the OpenTelemetry
    Prometheus exporter (on prometheus_client's default registry, which ``/metrics``
    serves). Already instrumented (e.g. by ``opentelemetry-instrument``): left as it
    is; ``/metrics`` then shows what that set-up registered there."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider

    from ._instrumentor import PyCommsInstrumentor

    instrumentor = PyCommsInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        log.info("pycomms-otel: already instrumented; /metrics serves the default Prometheus registry as it is")
        return
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    instrumentor.instrument(meter_provider=provider)


@contextlib.asynccontextmanager
async def serve_probes(bus: Bus, host: str, port: int) -> AsyncIterator[None]:
    """Serve the three endpoints while the context is entered."""
    try:
        server = await asyncio.start_server(lambda r, w: _answer(bus, r, w), host, port, limit=MAX_REQUEST_HEAD)
    except OSError as exc:
        raise PyCommsError(f"--metrics-port {port}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    log.info("metrics and probes on http://%s:%d/metrics, /healthz, /readyz", host, port)
    try:
        yield
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await server.wait_closed()


async def readiness(bus: Bus) -> tuple[bool, str]:
    """Whether ``bus`` is ready, and why not."""
    if bus.closed:
        return False, "the bus is closed"
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            nodes = await bus.nodes()
    except TimeoutError:
        return False, f"the backend did not answer a presence query within {READY_TIMEOUT}s"
    except Exception as exc:  # a PyCommsError from the backend, or BusClosed
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    if not any(node.id == bus.node.id for node in nodes):
        return False, "the backend does not list this node yet"
    return True, f"ready: node {bus.node.id} serving {', '.join(bus.node.services) or 'no services'}"


async def _answer(bus: Bus, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        method, target = _request_line(head)
        status, ctype, body = await _route(bus, method, target)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, ValueError):
        status, ctype, body = 400, "text/plain; charset=utf-8", b"bad request\n"
        method = "GET"
    except Exception:
        log.exception("metrics endpoint: answering a request failed")
        status, ctype, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        method = "GET"
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
    head_out = (
        f"HTTP/1.1 {status} {reason.get(status, 'Service Unavailable')}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        writer.write(head_out if method == "HEAD" else head_out + body)
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"not an HTTP request line: {line[:80]!r}")
    return parts[0], parts[1].split("?", 1)[0]


async def _route(bus: Bus, method: str, path: str) -> tuple[int, str, bytes]:
    text = "text/plain; charset=utf-8"
    if path not in ("/metrics", "/healthz", "/readyz"):
        return 404, text, b"not found: try /metrics, /healthz or /readyz\n"
    if method not in ("GET", "HEAD"):
        return 405, text, b"only GET and HEAD\n"
    if path == "/healthz":
        return 200, text, b"ok\n"
    if path == "/readyz":
        ready, why = await readiness(bus)
        return (200 if ready else 503), text, (why + "\n").encode()
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    from . import _state

    telemetry = _state.active()
    if telemetry is not None:
        await telemetry.backlog.refresh()  # the gauge's callback runs on this loop: it cannot wait
    return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
