"""The ``pycomms.backlog`` gauge: messages waiting for each service a bus serves,
asked of the backend (`pycomms.spi.BacklogTransport`) only when the metrics are
collected, never per message.

A transport is a coroutine API on its bus's event loop, an observable gauge's
callback is a plain function: collected from another thread (a periodic exporter),
the callback asks on the bus's loop and waits up to `BACKLOG_TIMEOUT`; collected on
the loop itself it cannot wait, so it reports the last answer, which is why
``/metrics`` calls `Backlogs.refresh` just before rendering.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from pycomms.spi import BacklogTransport

log = logging.getLogger("pycomms.otel")

BACKLOG_TIMEOUT = 2.0
"""Seconds one collection waits for a backend's backlog answers."""


@dataclass(eq=False)
class _Watched:
    transport: weakref.ref[BacklogTransport]
    attributes: dict[str, dict[str, Any]]
    """Per service: the gauge's attributes."""
    loop: asyncio.AbstractEventLoop | None
    last: dict[str, int] = field(default_factory=dict)
    """Per service: the last answer (a service whose backend could not tell is absent)."""


class Backlogs:
    """The buses whose backlog the gauge reports."""

    def __init__(self) -> None:
        self._watched: list[_Watched] = []

    def watch(self, transport: object, services: Iterable[str], attributes: dict[str, Any]) -> None:
        """Report ``services`` of a bus built on ``transport``, if it can tell its
        backlog; ``attributes`` (e.g. ``messaging.system``) go with each service's."""
        if not isinstance(transport, BacklogTransport):
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # learnt at the first refresh on the loop
        per_service = {s: {**attributes, "messaging.consumer.group.name": s} for s in services}
        if per_service:
            self._watched.append(_Watched(weakref.ref(transport), per_service, loop))

    async def refresh(self) -> None:
        """Ask the backends of the buses on this event loop, concurrently."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._ask(w) for w in list(self._watched) if w.loop in (loop, None)))

    async def _ask(self, watched: _Watched) -> None:
        if watched.loop is None:
            watched.loop = asyncio.get_running_loop()
        transport = watched.transport()
        if transport is None:
            return
        services = list(watched.attributes)
        counts = await asyncio.gather(*(_backlog(transport, s) for s in services))
        watched.last = {s: n for s, n in zip(services, counts, strict=True) if n is not None}

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        observed: list[Observation] = []
        for watched in list(self._watched):
            loop = watched.loop
            if watched.transport() is None or (loop is not None and loop.is_closed()):
                self._watched.remove(watched)  # its bus is gone
                continue
            if loop is not None and loop is not here and loop.is_running():
                asked = asyncio.run_coroutine_threadsafe(self._ask(watched), loop)
                try:
                    asked.result(BACKLOG_TIMEOUT + 1.0)
                except Exception:  # no answer in time: the last one stands
                    asked.cancel()
            observed += [Observation(n, watched.attributes[s]) for s, n in watched.last.items()]
        return observed


async def _backlog(transport: BacklogTransport, service: str) -> int | None:
    try:
        async with asyncio.timeout(BACKLOG_TIMEOUT):
            return await transport.backlog(service)
    except Exception as exc:  # an OperationError, or no answer in time: nothing to report now
        log.debug("backlog of %s: %s", service, exc)
        return None
