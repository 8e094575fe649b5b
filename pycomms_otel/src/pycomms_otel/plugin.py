"""The pycomms plugin of pycomms-otel (entry point ``pycomms``/``otel``).

Its hooks wrap nothing unless `PyCommsInstrumentor.instrument` ran before the bus
was built: an installed but unused pycomms-otel costs neither imports nor calls.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Generator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

import pycomms
from pycomms.hookspecs import AskMiddleware, EmitMiddleware, Middleware
from pycomms.spi import BackendConfig, DeadLetter, NodeInfo, Transport

from . import _state

if TYPE_CHECKING:
    from pycomms import Bus, Service


@pycomms.hookimpl(wrapper=True)
def pycomms_transport(config: BackendConfig) -> Generator[None, Transport | None, Transport | None]:
    """Sees the transport the backend's plugin built (for the backlog gauge)."""
    transport = yield
    telemetry = _state.active()
    metering = telemetry is not None and telemetry.on and telemetry.metering()
    _state.built(transport if metering else None)  # always replaced: a failed bus leaves none behind
    return transport


@pycomms.hookimpl
def pycomms_emit_middleware(node: NodeInfo, system: str) -> EmitMiddleware | None:
    """Besides the wrapper: the bus is being built on the transport just seen, so
    its services' backlog is watched from here."""
    transport = _state.take_built()
    telemetry = _state.active()
    if telemetry is None or not telemetry.live():
        return None
    from ._producing import emit_middleware
    from ._telemetry import SYSTEM, messaging_system

    if transport is not None:
        telemetry.backlog.watch(transport, node.services, {SYSTEM: messaging_system(system)})
    return emit_middleware(telemetry, node, messaging_system(system))


@pycomms.hookimpl
def pycomms_request_middleware(node: NodeInfo, system: str) -> AskMiddleware | None:
    telemetry = _state.active()
    if telemetry is None or not telemetry.live():
        return None
    from ._producing import ask_middleware
    from ._telemetry import messaging_system

    return ask_middleware(telemetry, node, messaging_system(system))


@pycomms.hookimpl
def pycomms_middleware(service: Service, system: str) -> Middleware | None:
    telemetry = _state.active()
    if telemetry is None or not telemetry.live():
        return None
    from ._consuming import handler_middleware
    from ._telemetry import messaging_system

    return handler_middleware(telemetry, service, messaging_system(system))


@pycomms.hookimpl
def pycomms_dead_lettered(letter: DeadLetter) -> None:
    telemetry = _state.active()
    if telemetry is not None and telemetry.on:
        from ._telemetry import CONSUMER_GROUP, DEAD_LETTER_REASON, DESTINATION

        attrs = {CONSUMER_GROUP: letter.service, DESTINATION: letter.type, DEAD_LETTER_REASON: letter.reason}
        telemetry.dead_letters.add(1, attrs)


@pycomms.hookimpl
def pycomms_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus /metrics, /healthz and /readyz over HTTP on PORT (pycomms-otel); "
        "with --workers K, worker i (from 1) on PORT+i-1",
    )
    parser.add_argument(
        "--metrics-host", default="0.0.0.0", help="address for --metrics-port (default: 0.0.0.0, every interface)"
    )


@pycomms.hookimpl
def pycomms_run(args: argparse.Namespace) -> Callable[[Bus], AbstractAsyncContextManager[None]] | None:
    port = getattr(args, "metrics_port", None)
    if port is None:
        return None
    if not 0 < port < 65536:
        raise pycomms.PyCommsError(f"--metrics-port must be a TCP port, 1 to 65535; got {port}")
    index = getattr(args, "worker_index", None)  # worker i (from 1) of `pycomms run --workers K`: port + i - 1
    if index:
        port += int(index) - 1
        if port > 65535:
            raise pycomms.PyCommsError(f"--metrics-port {args.metrics_port} for worker {index} would be port {port}")
    from ._probes import serve_probes, setup_metrics

    setup_metrics()
    host = args.metrics_host
    return lambda bus: serve_probes(bus, host, port)
