"""PostgreSQL LISTEN/NOTIFY: one listening connection per transport.

Triggers NOTIFY the namespace's channel with the queue a message was written to, or
``#node`` for a reply, when the writing transaction commits (so an outbox write wakes
consumers too). A lost listening connection is re-established with backoff; until
then, and as a safety net, consumers poll slowly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ._errors import describe
from ._tasks import stop_task

log = logging.getLogger("pycomms.sql")
_READY_WAIT = 10.0


class Listener:
    """Calls ``on_payload`` with every NOTIFY payload of ``channel``; ``on_reconnect``
    after the connection came back (notifications may have been missed)."""

    def __init__(
        self, engine: AsyncEngine, channel: str, on_payload: Callable[[str], None], on_reconnect: Callable[[], None]
    ) -> None:
        self._engine = engine
        self._channel = channel
        self._on_payload = on_payload
        self._on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Start listening; returns once LISTEN is in place (or after a while)."""
        self._task = asyncio.create_task(self._run(), name=f"pycomms-sql:listen:{self._channel}")
        try:
            async with asyncio.timeout(_READY_WAIT):
                await self._ready.wait()
        except TimeoutError:
            log.warning("LISTEN %s not in place after %.0fs; polling meanwhile", self._channel, _READY_WAIT)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The listening loop, for the transport to stop together with its other tasks."""
        return self._task

    def _callback(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_payload(payload)

    async def _run(self) -> None:
        backoff = 0.1
        first = True
        while True:
            try:
                async with self._engine.connect() as conn:
                    try:
                        raw: Any = (await conn.get_raw_connection()).driver_connection
                        lost = asyncio.Event()
                        raw.add_termination_listener(functools.partial(_set_on_close, lost))
                        await raw.add_listener(self._channel, self._callback)
                        self._ready.set()
                        if not first:
                            log.info("LISTEN %s re-established", self._channel)
                            self._on_reconnect()
                        first, backoff = False, 0.1
                        await lost.wait()
                    finally:
                        # Never back to the pool (it would go on listening): closed, so
                        # no UNLISTEN, which a silent server would never answer.
                        await conn.invalidate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN %s: connection lost (%s); retrying in %.1fs", self._channel, describe(exc), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None


def _set_on_close(lost: asyncio.Event, _conn: Any) -> None:
    lost.set()
