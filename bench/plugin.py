"""Adds ``pycomms bench`` to the command line (entry point ``pycomms``): the same
harness and options as ``python -m bench``."""

from __future__ import annotations

import argparse

import pycomms


@pycomms.hookimpl
def pycomms_add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # every argument, -h included, goes to the harness's own parser
    bench = subparsers.add_parser(
        "bench", help="benchmark a backend URL against baselines (pycomms bench -h)", add_help=False, prefix_chars="\0"
    )
    bench.add_argument("args", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from bench._cli import main

    return main(args.args, prog="pycomms bench")
