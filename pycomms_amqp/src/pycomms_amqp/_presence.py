"""Presence over a fanout exchange: every node heartbeats, every node keeps a table.

Each node binds an exclusive queue to the namespace's presence fanout and publishes
``hello`` when it (re)connects, ``beat`` every ``presence_interval`` seconds and ``bye``
when it closes. A node that hears a ``hello`` answers with a ``beat`` so that the
newcomer learns about it at once. Entries silent for three intervals are dropped.

``nodes()`` is read-your-writes: it publishes a ``ping`` to the fanout and waits until
its own ping comes back through its queue. A queue is FIFO, so every hello, beat and bye
the broker had accepted before the ping (e.g. a ``bye`` of a node whose ``close()``
returned) has been applied to the table by then. A node that joined less than one
interval ago cannot know everybody yet (the answers to its ``hello`` may still be on
their way): after its ping came back, its ``nodes()`` waits until one interval has
passed since it started, by which time every live node has beaten at least once. The
ping, not that local wait, is what ``operation_timeout`` bounds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Coroutine
from typing import Any

from aio_pika.abc import AbstractChannel
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from pydantic_core import from_json, to_json

from pycomms import OperationError, PyCommsError
from pycomms.spi import NodeInfo, stop_tasks

from ._connection import CLOSE_TIMEOUT
from ._errors import QUIET_ERRORS, describe, timed_out
from ._link import Link
from ._names import Names
from ._publisher import Outgoing

log = logging.getLogger("pycomms.amqp")

MISSED_BEATS = 3
"""A node silent for this many presence intervals is considered gone."""


class Presence:
    """This node's presence announcements and its table of the other nodes."""

    def __init__(self, link: Link, names: Names, node: NodeInfo, interval: float, timeout: float) -> None:
        self._link = link
        self._names = names
        self._node = node
        self._interval = interval
        self._timeout = timeout
        self._table: dict[str, tuple[NodeInfo, float]] = {}
        self._echoes: dict[str, asyncio.Future[None]] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._complete_at = 0.0
        """Loop time from which every live node has been heard from at least once."""
        self._background: set[asyncio.Task[None]] = set()

    async def attach(self, channel: AbstractChannel) -> str:
        """Declare this node's presence queue on ``channel`` and consume it; return its name."""
        queue = await channel.declare_queue(
            None,  # server-named: never collides with the queue of an older connection
            exclusive=True,
            auto_delete=True,
            arguments={"x-message-ttl": int(self._interval * MISSED_BEATS * 1000)},
        )
        await queue.bind(self._names.presence)
        raw = await channel.get_underlay_channel()
        await raw.basic_consume(queue.name, self._on_message, no_ack=True)
        return queue.name

    def start(self) -> None:
        """Start heartbeating (the first beat is a ``hello``)."""
        self._complete_at = asyncio.get_running_loop().time() + self._interval
        self._heartbeat = asyncio.create_task(self._beat_forever(), name=f"pycomms:amqp:presence:{self._node.id}")

    def announce(self) -> None:
        """Say ``hello`` again soon (after a reconnection)."""
        self._spawn(self._send_quietly("hello"))

    async def _beat_forever(self) -> None:
        op = "hello"
        while True:
            await self._send_quietly(op)
            op = "beat"
            await asyncio.sleep(self._interval)

    async def _send_quietly(self, op: str) -> None:
        """Send ``op`` within ``operation_timeout``; a beat that fails is logged and the
        next one tries again."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._send(op)
        except QUIET_ERRORS as exc:
            log.debug("amqp: presence %s not sent: %s", op, describe(exc))

    async def _send(self, op: str, nonce: str = "") -> None:
        body = to_json({"op": op, "node": from_json(self._node.seen().to_json()), "nonce": nonce})
        properties = Basic.Properties(
            content_type="application/json",
            delivery_mode=1,
            expiration=str(int(self._interval * MISSED_BEATS * 1000)),
        )
        await self._link.publish([Outgoing(self._names.presence, "", body, properties)])

    async def _on_message(self, message: DeliveredMessage) -> None:
        try:
            raw: Any = from_json(message.body)
            op = raw["op"]
            info = NodeInfo.from_json(to_json(raw["node"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.debug("amqp: ignoring a malformed presence message: %s", exc)
            return
        if info.id == self._node.id:
            if op == "ping":
                echo = self._echoes.get(str(raw.get("nonce", "")))
                if echo is not None and not echo.done():
                    echo.set_result(None)
            return
        if op == "bye":
            self._table.pop(info.id, None)
        elif op in ("hello", "beat"):
            known = info.id in self._table
            self._table[info.id] = (info, time.monotonic())
            if op == "hello" and not known:
                self._spawn(self._send_quietly("beat"))
        elif op == "ping":
            self._table.setdefault(info.id, (info, time.monotonic()))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def nodes(self) -> list[NodeInfo]:
        """Every live node, this one first; see the module docstring for freshness.
        Raises `OperationError` when the ping is not echoed within ``operation_timeout``."""
        loop = asyncio.get_running_loop()
        nonce = os.urandom(8).hex()
        echo: asyncio.Future[None] = loop.create_future()
        self._echoes[nonce] = echo
        what = f"amqp: presence (nodes) on {self._link.where}"
        try:
            async with asyncio.timeout(self._timeout):
                await self._send("ping", nonce)
                await echo
        except TimeoutError:
            raise timed_out(OperationError, what, self._timeout, "operation_timeout") from None
        except PyCommsError as exc:
            raise OperationError(f"{what} failed: {exc}") from None
        finally:
            del self._echoes[nonce]
        if (early := self._complete_at - loop.time()) > 0:
            await asyncio.sleep(early)  # just joined: let every live node be heard from once
        horizon = time.monotonic() - self._interval * MISSED_BEATS
        now = time.time()
        for node_id in [i for i, (_, seen) in self._table.items() if seen < horizon]:
            del self._table[node_id]
        return [self._node.seen(now)] + [
            info.seen(now - (time.monotonic() - seen)) for info, seen in self._table.values()
        ]

    async def stop(self) -> None:
        """Stop heartbeating (and answering). Never raises."""
        await stop_tasks([self._heartbeat, *self._background], give_up_after=CLOSE_TIMEOUT)

    async def leave(self) -> None:
        """Stop heartbeating and say ``bye`` (at most `CLOSE_TIMEOUT`; not on a link
        found silent). Never raises."""
        await self.stop()
        if self._link.connected and not self._link.suspect:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._send("bye")
            except TimeoutError:
                log.debug("amqp: presence bye not confirmed within %.1fs; the link seems silent", CLOSE_TIMEOUT)
                self._link.suspect = True
            except QUIET_ERRORS as exc:
                log.debug("amqp: presence bye not sent: %s", describe(exc))
