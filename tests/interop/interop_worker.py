"""The PyComms side of the interop tests: one service, ``interop``, run by ``pycomms run``
in a process of its own, that foreign programs (examples/interop/node, examples/interop/python)
talk to over a real backend.

    .venv/bin/pycomms run tests/interop/interop_worker.py:services --url URL

What it handles it appends, one JSON object a line, to the file named by
``$PYCOMMS_INTEROP_RECORD`` (nothing is recorded when it is unset), so the test can check
that each message was handled exactly once and with what it carried.

The message types are the contract with the foreign clients, by their wire names:

- ``interop.order_placed`` (event) ``{"order_id": int, "total": float}``
- ``interop.ship`` (command) ``{"order_id": int, "carrier": str}``
- ``interop.get_quote`` (request) ``{"sku": str, "qty": int}`` → reply ``interop.quote``
  ``{"sku": str, "qty": int, "cents": int}``; an ``sku`` of ``"nope"`` is rejected, so the
  asker gets an error reply (``pycommserror: rejected``)
- ``interop.announce`` (command) ``{"count": int, "text": str}``: makes the worker publish
  ``count`` events ``interop.notice`` ``{"seq": int, "text": str}`` (seq 0 .. count-1),
  the PyComms → foreign direction. The worker handles ``interop.notice`` itself too, so
  a foreign subscriber gets a copy of its own beside PyComms' service.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from pycomms import Command, Context, Event, Message, Reject, Request, Retry, Service

RECORD_ENV = "PYCOMMS_INTEROP_RECORD"
SERVICE = "interop"


class OrderPlaced(Event, name="interop.order_placed"):
    order_id: int
    total: float


class Ship(Command, name="interop.ship"):
    order_id: int
    carrier: str


class Quote(Message, name="interop.quote"):
    sku: str
    qty: int
    cents: int


class GetQuote(Request[Quote], name="interop.get_quote"):
    sku: str
    qty: int


class Announce(Command, name="interop.announce"):
    count: int
    text: str


class Notice(Event, name="interop.notice"):
    seq: int
    text: str


_lock = threading.Lock()


def record(handler: str, ctx: Context, data: dict[str, Any]) -> None:
    """Append what ``handler`` handled to ``$PYCOMMS_INTEROP_RECORD``, flushed at once."""
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    line = json.dumps(
        {"handler": handler, "id": ctx.message_id, "attempt": ctx.attempt, "headers": ctx.headers, "data": data}
    )
    with _lock, open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


interop = Service(SERVICE, concurrency=16, retry=Retry(max_attempts=2, delay=0.1))


@interop.on
async def order_placed(event: OrderPlaced, ctx: Context) -> None:
    record("order_placed", ctx, event.model_dump())


@interop.on
async def ship(command: Ship, ctx: Context) -> None:
    record("ship", ctx, command.model_dump())


@interop.on
async def get_quote(request: GetQuote, ctx: Context) -> Quote:
    record("get_quote", ctx, request.model_dump())
    if request.sku == "nope":
        raise Reject(f"no price for {request.sku!r}")
    return Quote(sku=request.sku, qty=request.qty, cents=250 * request.qty)


@interop.on
async def notice(event: Notice, ctx: Context) -> None:
    record("notice", ctx, event.model_dump())


@interop.on
async def announce(command: Announce, ctx: Context) -> None:
    await ctx.publish(*(Notice(seq=seq, text=command.text) for seq in range(command.count)))
    record("announce", ctx, command.model_dump())


services = [interop]
