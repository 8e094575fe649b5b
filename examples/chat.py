"""A chat between terminals, brokerless, with nothing to configure.

    .venv/bin/python examples/chat.py alice        # terminal 1
    .venv/bin/python examples/chat.py bob          # terminal 2

(``.venv`` is the README's set-up; with it activated, plain ``python`` works.)

Each line you type is published as a `Said` event and printed by every other chat
("[alice] hello"). Joins and departures come from presence (`bus.nodes()`). Ctrl-D or
Ctrl-C leaves.

With no URL the bus uses ``$PYCOMMS_URL``, then ``pycomms.toml``, then the default
``tcp://``: processes of one user on one host find each other by themselves. Any
cross-process backend works too: ``--url redis://localhost:6379/0``.

Why one *service per person*: an event goes to one instance of every service that
handles it. Were every chat an instance of one ``chat`` service, each line would reach
only one of them. As ``chat-alice``, ``chat-bob``, ... every chat gets its own copy.

Why *ephemeral* services: backends keep messages for an ordinary service while none
of its instances runs (retention), so a worker that restarts misses nothing. A chat
window is an observer instead: it wants what is said while it is open, and nothing
should pile up for it after it closed. ``Service(..., ephemeral=True)`` says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncGenerator

import pycomms
from pycomms import Event, Service


class Said(Event, name="chat.said"):
    """One line of the chat. The explicit wire name is the contract between chats."""

    sender: str
    text: str


PRESENCE_INTERVAL = 1.0  # seconds between looks at who is online


def chat_service(name: str) -> Service:
    """The service that prints what others say; named after its person (see above)."""
    service = Service(f"chat-{name}", ephemeral=True)

    @service.on
    async def show(said: Said) -> None:
        if said.sender == name:
            return  # our own line: already on our screen
        print(f"[{said.sender}] {said.text}", flush=True)

    return service


async def stdin_lines() -> AsyncGenerator[str, None]:
    """Lines typed on stdin, read without blocking the event loop, until Ctrl-D."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    fd = sys.stdin.fileno()
    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)  # the transport closes it: keep sys.stdin open
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    except ValueError:  # stdin is a regular file (`chat.py bob < lines.txt`): reading it never blocks
        pipe.close()
        for line in sys.stdin:
            yield line.rstrip("\n")
        return
    try:
        while line := await reader.readline():
            yield line.decode(errors="replace").rstrip("\n")
    finally:
        transport.close()
        # the transport made the pipe non-blocking, and with it the terminal the shell shares
        with contextlib.suppress(OSError):
            os.set_blocking(fd, True)


def chatters(nodes: list[pycomms.NodeInfo]) -> dict[str, str]:
    """Node id -> person, for the nodes that run a chat service."""
    return {
        node.id: service.removeprefix("chat-")
        for node in nodes
        for service in node.services
        if service.startswith("chat-")
    }


async def watch_presence(bus: pycomms.Bus, me: str) -> None:
    """Print joins and departures, comparing who is online now with the last look."""
    online = chatters(await bus.nodes())
    others = sorted(person for node_id, person in online.items() if node_id != bus.node.id)
    print(f"* you are {me}; online: {', '.join(others) or 'nobody else yet'}", flush=True)
    while True:
        await asyncio.sleep(PRESENCE_INTERVAL)
        now = chatters(await bus.nodes())
        for node_id in now.keys() - online.keys():
            print(f"* {now[node_id]} joined", flush=True)
        for node_id in online.keys() - now.keys():
            print(f"* {online[node_id]} left", flush=True)
        online = now


async def chat(name: str, url: str | None) -> int:
    service = chat_service(name)
    async with pycomms.connect(url, services=[service], name=service.name) as bus:
        twins = [n for n in await bus.nodes() if service.name in n.services and n.id != bus.node.id]
        if twins:
            # a second instance of chat-NAME would share (split) NAME's lines with the first
            print(f"someone is already chatting as {name} (pid {twins[0].pid}); pick another name", file=sys.stderr)
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def type_lines() -> None:
            async with contextlib.aclosing(stdin_lines()) as lines:  # closes stdin's transport on cancel too
                async for text in lines:
                    if text.strip():
                        await bus.publish(Said(sender=name, text=text))
            stop.set()  # Ctrl-D

        async with asyncio.TaskGroup() as tasks:
            typing = tasks.create_task(type_lines())
            presence = tasks.create_task(watch_presence(bus, name))
            await stop.wait()
            typing.cancel()
            presence.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("* bye", flush=True)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="who you are in the chat (letters, digits, '-', '_')")
    parser.add_argument("--url", help="backend URL (default: $PYCOMMS_URL, pycomms.toml, then tcp://)")
    args = parser.parse_args()
    if not args.name.replace("-", "").replace("_", "").isalnum():
        parser.error(f"name {args.name!r}: use letters, digits, '-' and '_'")
    try:
        sys.exit(asyncio.run(chat(args.name, args.url)))
    except pycomms.PyCommsError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:  # Ctrl-C while still connecting
        sys.exit(130)


if __name__ == "__main__":
    main()
