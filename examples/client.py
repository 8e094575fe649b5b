"""A client of the greeter in ``examples/worker.py``: sends commands, asks for replies.

    .venv/bin/pycomms run examples/worker.py:greeter --url tcp://     # terminal 1
    .venv/bin/python examples/client.py --url tcp:// Ada Grace        # terminal 2

(``.venv`` is the README's set-up; with it activated, drop the ``.venv/bin/``.)

Without ``--url`` it uses ``$PYCOMMS_URL``, then ``pycomms.toml`` /
``[tool.pycomms]``, then the built-in default. With a backend that does not cross
processes (``memory://``) it serves the greeter in this process, so
``.venv/bin/python examples/client.py --url memory://demo Ada`` works on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from worker import GetGreeting, Greet, greeter  # worker.py, next to this file

import pycomms


async def wait_for_service(bus: pycomms.Bus, service: str, timeout: float) -> None:
    """Wait until presence shows a node serving ``service``."""
    async with asyncio.timeout(timeout):
        while not any(service in node.services for node in await bus.nodes()):  # noqa: ASYNC110 - polling presence
            await asyncio.sleep(0.1)


async def main(url: str | None, names: list[str], timeout: float) -> None:
    async with pycomms.connect(url, name="greeter-client") as bus:
        local: pycomms.Bus | None = None
        if not bus.capabilities.cross_process:
            print(f"{bus.url} does not cross processes: serving the greeter in this process")
            local = await pycomms.connect(url, services=[greeter])
        try:
            await wait_for_service(bus, "greeter", timeout)
            await bus.send(*(Greet(name=name) for name in names))  # one round trip
            for name in names:
                reply = await bus.request(GetGreeting(name=name), timeout=timeout)
                print(f"{reply.text} (greeting #{reply.number})")
            for node in await bus.nodes():
                services = ", ".join(node.services) or "-"
                print(f"node {node.name}: {services} on {node.host} pid {node.pid}")
        finally:
            if local is not None:
                await local.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="who to greet")
    parser.add_argument("--url", help="backend URL (default: $PYCOMMS_URL, pycomms.toml, then the built-in default)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the greeter and each reply")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.url, args.names, args.timeout))
    except TimeoutError:
        sys.exit(f"no greeter answered within {args.timeout}s: is `pycomms run examples/worker.py:greeter` running?")
    except pycomms.PyCommsError as exc:
        sys.exit(f"error: {exc}")
