"""``pycomms listen``: tail the events of given types as they are published.

The listener runs an *ephemeral* service (a fresh ``listen-…`` name): it gets its own
copy of every event of those types published while it runs, takes nothing from the
services that handle them, and leaves no queue, group or row behind when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from typing import Any

from ._cli_ops import load_message_type
from ._connect import connect
from ._context import Context
from ._errors import PyCommsError
from ._messages import Event, Message
from ._service import Service


def add_listen(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("listen", help="print the events of given types as they are published (Ctrl-C stops)")
    p.add_argument("types", nargs="+", metavar="MODULE:CLASS", help="event classes to tail")
    p.add_argument("--url")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    p.add_argument("--count", type=int, metavar="N", help="stop after N events")
    p.add_argument("--for", dest="seconds", type=float, metavar="SECONDS", help="stop after this long")
    p.set_defaults(handler=lambda args: asyncio.run(_listen(args)))


def event_types(specs: list[str]) -> list[type[Event]]:
    """Load the classes named by ``specs``; each must be an event type."""
    types: list[type[Event]] = []
    for spec in specs:
        cls = load_message_type(spec)
        if not issubclass(cls, Event):
            raise PyCommsError(
                f"listen tails events; {spec} is a {cls.kind}, which goes to one service only "
                "(a listener would take it away from that service)"
            )
        types.append(cls)
    return types


def render(message: Message, ctx: Context, *, as_json: bool) -> str:
    """One output line for one event."""
    cls = type(message)
    if as_json:
        record: dict[str, Any] = {
            "type": cls.type_name,
            "id": ctx.message_id,
            "correlation_id": ctx.correlation_id,
            "received_at": time.time(),
            "headers": ctx.headers,
            "body": message.model_dump(mode="json"),
        }
        return json.dumps(record, ensure_ascii=False)
    stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
    return f"{stamp}  {cls.type_name}  {ctx.message_id}  {message.model_dump_json()}"


async def _listen(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise PyCommsError(f"--count must be at least 1, got {args.count}")
    types = event_types(args.types)
    stop = asyncio.Event()
    seen = 0
    service = Service(f"listen-{uuid.uuid4().hex[:10]}", concurrency=1, ephemeral=True)

    async def show(message: Message, ctx: Context) -> None:
        nonlocal seen
        if stop.is_set():
            return
        print(render(message, ctx, as_json=args.json), flush=True)
        seen += 1
        if args.count is not None and seen >= args.count:
            stop.set()

    for cls in types:
        service.on(cls)(show)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform / thread
            loop.add_signal_handler(signum, stop.set)
    try:
        async with connect(args.url, services=[service], name="pycomms-listen"):
            names = ", ".join(cls.type_name for cls in types)
            print(f"listening for {names} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.seconds):
                    await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
    print(f"listen: {seen} event(s)", file=sys.stderr)
    return 0
