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

from pycomms.spi import stop_tasks

from ._errors import describe

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
        self._stopping = False
        self._lost = asyncio.Event()
        self._raw: Any = None

    async def start(self) -> None:
        """Start listening; returns once LISTEN is in place (or after a while)."""
        self._task = asyncio.create_task(self._run(), name=f"pycomms-sql:listen:{self._channel}")
        try:
            async with asyncio.timeout(_READY_WAIT):
                await self._ready.wait()
        except TimeoutError:
            log.warning("LISTEN %s not in place after %.0fs; polling meanwhile", self._channel, _READY_WAIT)

    async def stop(self, seconds: float, *, silent: bool) -> bool:
        """Stop listening within ``seconds``; True if the loop ended in time.

        The listening connection is closed, not returned to the pool (it would go on
        listening), so no UNLISTEN is needed. It is closed politely (a Terminate
        message) unless the server is ``silent``: then it is aborted at once, since
        interrupting asyncpg's polite close leaves a failed future nobody awaits."""
        self._stopping = True
        if silent and self._raw is not None:
            self._raw.terminate()
        self._lost.set()
        task, self._task = self._task, None
        if task is None:
            return True
        await asyncio.wait((task,), timeout=seconds)
        if not task.done():
            return not await stop_tasks([task], recancel_after=0.1, give_up_after=0.5)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("LISTEN %s ended with %s", self._channel, describe(exc))
        return True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _callback(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_payload(payload)

    async def _run(self) -> None:
        backoff = 0.1
        first = True
        while not self._stopping:
            try:
                async with self._engine.connect() as conn:
                    try:
                        raw: Any = (await conn.get_raw_connection()).driver_connection
                        self._raw = raw
                        self._lost = lost = asyncio.Event()
                        raw.add_termination_listener(functools.partial(_set_on_close, lost))
                        await raw.add_listener(self._channel, self._callback)
                        self._ready.set()
                        if not first:
                            log.info("LISTEN %s re-established", self._channel)
                            self._on_reconnect()
                        first, backoff = False, 0.1
                        if not self._stopping:
                            await lost.wait()
                    finally:
                        self._raw = None
                        await conn.invalidate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.stopping:
                    return
                log.warning("LISTEN %s: connection lost (%s); retrying in %.1fs", self._channel, describe(exc), backoff)
            if not self._stopping:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


def _set_on_close(lost: asyncio.Event, _conn: Any) -> None:
    lost.set()
