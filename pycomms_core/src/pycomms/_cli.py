"""The ``pycomms`` command line: ``run``, ``backends``, ``demo`` and plugin commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

from ._bus import DEFAULT_GRACE
from ._cli_listen import add_listen
from ._cli_ops import add_commands
from ._closing import run_bounded
from ._connect import connect
from ._errors import PyCommsError
from ._loading import load_attribute
from ._plugins import plugin_manager
from ._service import Service
from ._supervisor import add_worker_options, catch_early_signals, supervise_if_asked, worker_name, worker_ready
from .spi import Capabilities, SchemeInfo

log = logging.getLogger("pycomms")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `run --workers` gives its workers
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=getattr(logging, (args.log_level or getattr(args, "default_log_level", "warning")).upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.handler(args))
    except PyCommsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pycomms backends | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pycomms", description="Typed messages between applications.")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default: info for run")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser("run", help="run services as a worker until SIGINT/SIGTERM")
    run.add_argument("target", help="MODULE:ATTR or path/to/file.py:ATTR naming a Service or a list of them")
    run.add_argument("--url", help="backend URL (default: $PYCOMMS_URL, pycomms.toml, then the built-in default)")
    run.add_argument("--name", help="node name shown in presence")
    run.add_argument("--grace", type=float, default=DEFAULT_GRACE, help="seconds to let handlers finish on shutdown")
    add_worker_options(run)
    run.set_defaults(handler=_run, default_log_level="info")
    plugin_manager().hook.pycomms_run_options(parser=run)

    backends = sub.add_parser("backends", help="list installed backends and their URL schemes")
    backends.add_argument("--capabilities", action="store_true", help="print the capability matrix (Markdown) instead")
    backends.set_defaults(handler=_backends)

    demo = sub.add_parser("demo", help="run the shop demo: orders, billing, shipping, pricing")
    demo.add_argument("--url", help="backend URL (default: as for every command)")
    demo.add_argument("--orders", type=int, default=8, help="how many orders to place (one of them is poison)")
    demo.set_defaults(handler=_demo, default_log_level="error")

    add_commands(sub)
    add_listen(sub)
    plugin_manager().hook.pycomms_add_commands(subparsers=sub)
    return parser


def load_services(target: str) -> list[Service]:
    """Resolve ``MODULE:ATTR`` or ``path/file.py:ATTR`` to a list of services."""
    value = load_attribute(target)
    services = [value] if isinstance(value, Service) else value
    if not isinstance(services, list | tuple) or not services or not all(isinstance(s, Service) for s in services):
        raise PyCommsError(f"{target} must be a pycomms.Service or a list of them, got {type(value).__name__}")
    return list(services)


def _run(args: argparse.Namespace) -> int:
    supervised = supervise_if_asked(args)
    if supervised is not None:
        return supervised
    services = load_services(args.target)
    name = worker_name(args, services)

    attach = [a for a in plugin_manager().hook.pycomms_run(args=args) if a is not None]

    async def serve() -> None:
        early = catch_early_signals()
        async with connect(args.url, services=services, name=name) as bus, contextlib.AsyncExitStack() as stack:
            for enter in attach:
                await stack.enter_async_context(enter(bus))
            worker_ready(args)
            if early:  # told to stop while starting: close as serve() would have
                log.info("received %s while starting, closing gracefully (grace %.1fs)", early[0].name, args.grace)
                await bus.close(grace=args.grace)
                return
            await bus.serve(grace=args.grace)

    run_bounded(serve())
    return 0


def _backends(args: argparse.Namespace) -> int:
    infos = sorted(
        (info for infos in plugin_manager().hook.pycomms_schemes() for info in infos), key=lambda i: i.scheme
    )
    if args.capabilities:
        print(capability_matrix(infos))
        return 0
    width = max((len(i.scheme) for i in infos), default=6) + 5
    dist = max((len(i.distribution) for i in infos), default=12) + 2
    print(f"{'scheme':<{width}}{'distribution':<{dist}}description")
    for info in infos:
        print(f"{info.scheme + '://':<{width}}{info.distribution:<{dist}}{info.description}")
    return 0


def capability_matrix(infos: Sequence[SchemeInfo]) -> str:
    """A Markdown table: one row per scheme, one column per declared capability."""
    names = [f.name for f in dataclasses.fields(Capabilities)]
    lines = [
        "| scheme | distribution | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for info in infos:
        caps = info.capabilities
        cells = ["?" if caps is None else ("yes" if getattr(caps, n) else "no") for n in names]
        lines.append(f"| `{info.scheme}://` | {info.distribution} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    if args.orders < 2:
        raise PyCommsError(f"--orders must be at least 2 (one of them is poison), got {args.orders}")
    return asyncio.run(run_demo(args.url, orders=args.orders))


if __name__ == "__main__":
    raise SystemExit(main())
