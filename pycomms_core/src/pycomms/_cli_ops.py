"""Day-two commands of the ``pycomms`` CLI: send messages, see nodes, work dead letters."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from pydantic import ValidationError

from ._bus import Bus
from ._connect import connect
from ._errors import PyCommsError
from ._loading import load_attribute, load_module
from ._messages import Command, Event, Message, Request, is_message_type
from ._schema import asyncapi, collect, diff, json_schemas
from .spi import DeadLetter

PAGE = 500
"""Dead letters per replay or purge call."""
LIST_LIMIT = 100_000


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb, kind in (("publish", "event"), ("send", "command"), ("request", "request")):
        p = sub.add_parser(verb, help=f"{verb} one {kind} given as JSON (argument or stdin)")
        p.add_argument("type", metavar="MODULE:CLASS", help=f"the {kind} class")
        p.add_argument("body", nargs="?", default="-", help="the message as JSON; '-' or nothing reads stdin")
        p.add_argument("--url")
        if verb == "request":
            p.add_argument("--timeout", type=float, default=10.0)
        p.set_defaults(handler=_sync(_emit), verb=verb)

    schema = sub.add_parser(
        "schema", help="MODULE: AsyncAPI 3.0 / JSON Schema of its message types; diff OLD NEW: breaking changes"
    )
    schema.add_argument("args", nargs="+", metavar="MODULE | diff OLD NEW")
    schema.add_argument("--format", choices=["asyncapi", "json"], default="asyncapi")
    schema.set_defaults(handler=_schema)

    nodes = sub.add_parser("nodes", help="who is up: services, types handled, host, last seen")
    nodes.add_argument("--url")
    nodes.add_argument("--json", action="store_true", help="one JSON object per line")
    nodes.set_defaults(handler=_sync(_nodes))

    namespace = sub.add_parser("namespace", help="namespaces: drop").add_subparsers(metavar="ACTION")
    drop = namespace.add_parser(
        "drop", help="remove every broker-side object of URL's namespace (streams, queues, tables, registry entries)"
    )
    drop.add_argument("url", metavar="URL", help="the backend URL with ?namespace=NAME (default namespace: 'default')")
    drop.add_argument("--force", action="store_true", help="drop even while nodes of the namespace are present")
    drop.set_defaults(handler=_sync(_drop))

    dlq = sub.add_parser("dlq", help="dead letters: ls, show, replay, purge").add_subparsers(metavar="ACTION")
    for action, text in (
        ("ls", "list dead letters"),
        ("show", "show dead letters in full"),
        ("replay", "send dead letters back to their service"),
        ("purge", "delete dead letters"),
    ):
        p = dlq.add_parser(action, help=text)
        p.add_argument("service")
        p.add_argument("--url")
        p.add_argument("--id", action="append", dest="ids", help="only this id (repeatable)")
        p.add_argument("--type", help="only this message type name")
        p.add_argument("--older-than", type=float, metavar="SECONDS", help="only letters that failed this long ago")
        p.add_argument(
            "--limit",
            type=int,
            default=LIST_LIMIT,
            help=f"most letters listed at once (default {LIST_LIMIT:,}); replay/purge without filters go on "
            "until none is left",
        )
        if action in ("ls", "show"):
            p.add_argument("--json", action="store_true", help="one JSON object per line")
        else:
            p.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
        p.set_defaults(handler=_sync(_dlq), action=action)


def _sync(func: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[[argparse.Namespace], int]:
    return lambda args: asyncio.run(func(args))


def load_message_type(spec: str) -> type[Message]:
    """``module:Class`` (or ``path/file.py:Class``) naming a message class."""
    value = load_attribute(spec)
    if not is_message_type(value):
        raise PyCommsError(f"{spec} is not a message class (a subclass of pycomms.Event, Command or Request)")
    return value  # type: ignore[no-any-return]


async def _emit(args: argparse.Namespace) -> int:
    cls = load_message_type(args.type)
    expected = {"publish": Event, "send": Command, "request": Request}[args.verb]
    if not issubclass(cls, expected):
        raise PyCommsError(
            f"{args.verb} takes {_article(expected.__name__)} {expected.__name__}; "
            f"the kind of {cls.__name__} is {cls.kind!r}"
        )
    text = sys.stdin.read() if args.body == "-" else args.body
    try:
        message = cls.model_validate_json(text)
    except ValidationError as exc:
        print(f"invalid {cls.__name__}:\n{exc}", file=sys.stderr)
        return 2
    async with connect(args.url, name="pycomms-cli") as bus:
        if args.verb == "publish":
            await bus.publish(message)  # type: ignore[arg-type]
        elif args.verb == "send":
            await bus.send(message)  # type: ignore[arg-type]
        else:
            reply: Message = await bus.request(message, timeout=args.timeout)  # type: ignore[arg-type]
            print(reply.model_dump_json())
            return 0
    if bus.unsent:
        print(
            f"{args.verb}: {cls.type_name} NOT delivered: no node had taken it when the command ended, and it was "
            "held in memory only (give the URL spool=DIR to keep such messages on disk until a peer takes them)",
            file=sys.stderr,
        )
        return 1
    print(f"{args.verb}: {cls.type_name} accepted", file=sys.stderr)
    return 0


async def _drop(args: argparse.Namespace) -> int:
    bus = await connect(args.url, name="pycomms-cli")
    try:
        removed = await bus.drop_namespace(force=args.force)
    finally:
        await bus.close()
    print(f"namespace {bus.namespace!r} dropped: {removed} object(s) removed")
    return 0


async def _nodes(args: argparse.Namespace) -> int:
    async with connect(args.url, name="pycomms-cli") as bus:
        nodes = [n for n in await bus.nodes() if n.id != bus.node.id]
    now = time.time()
    if args.json:
        for node in nodes:
            print(node.to_json().decode())
        return 0
    rows = [
        (
            node.name,
            node.id,
            ",".join(node.services) or "-",
            ",".join(node.handles) or "-",
            f"{node.host}:{node.pid}",
            f"{max(0.0, now - node.last_seen):.1f}s ago",
        )
        for node in sorted(nodes, key=lambda n: (n.name, n.id))
    ]
    _table(("NAME", "ID", "SERVICES", "HANDLES", "HOST:PID", "LAST SEEN"), rows)
    return 0


async def _dlq(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise PyCommsError(f"--limit must be at least 1, got {args.limit}")
    async with connect(args.url, name="pycomms-cli") as bus:
        listed = await bus.dead_letters(args.service, limit=args.limit)
        letters = _filter(listed, args)
        truncated = len(listed) >= args.limit
        if args.action in ("ls", "show"):
            _print_letters(letters, full=args.action == "show", as_json=args.json)
            _warn_truncated(truncated, args.limit)
            return 0
        if args.dry_run:
            more = " (at least: the listing stopped at --limit)" if truncated else ""
            print(f"would {args.action} {len(letters)} dead letter(s) of {args.service}{more}", file=sys.stderr)
            return 0
        filtered = bool(args.ids or args.type is not None or args.older_than is not None)
        done = wanted = 0
        seen: set[str] = set()
        while letters:
            ids = [letter.id for letter in letters]
            seen.update(ids)
            wanted += len(ids)
            done += await _bulk(bus, args.action, args.service, ids)
            if filtered or not truncated:
                break
            # unfiltered and the listing was full: what was handled left the list, so list again
            # (a replayed letter that fails again comes back with its id: it is not taken twice)
            listed = await bus.dead_letters(args.service, limit=args.limit)
            letters = [letter for letter in listed if letter.id not in seen]
            truncated = len(listed) >= args.limit
        print(f"{args.action}: {done} of {wanted} dead letter(s) of {args.service}", file=sys.stderr)
        if filtered and truncated:
            _warn_truncated(True, args.limit)
            return 1
        return 0 if done == wanted else 1


def _article(noun: str) -> str:
    return "an" if noun[:1] in "AEIOU" else "a"


def _warn_truncated(truncated: bool, limit: int) -> None:
    if truncated:
        print(
            f"warning: listed the oldest {limit:,} dead letters (--limit); more may remain: raise --limit",
            file=sys.stderr,
        )


def _schema(args: argparse.Namespace) -> int:
    if args.args[0] == "diff":
        if len(args.args) != 3:
            raise PyCommsError("usage: pycomms schema diff OLD NEW (each a module or a JSON file from --format json)")
        breaking, compatible = diff(_schema_doc(args.args[1]), _schema_doc(args.args[2]))
        for line in breaking:
            print(f"BREAKING  {line}")
        for line in compatible:
            print(f"ok        {line}")
        print(f"{len(breaking)} breaking, {len(compatible)} compatible change(s)", file=sys.stderr)
        return 1 if breaking else 0
    if len(args.args) != 1:
        raise PyCommsError("usage: pycomms schema MODULE [--format asyncapi|json]")
    types = collect(load_module(args.args[0]))
    document = json_schemas(types) if args.format == "json" else asyncapi(types, title=args.args[0])
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return 0


def _schema_doc(source: str) -> dict[str, Any]:
    if source.endswith(".json"):
        try:
            with open(source, encoding="utf-8") as file:
                document: dict[str, Any] = json.load(file)
        except (OSError, ValueError) as exc:
            raise PyCommsError(f"cannot read {source}: {exc}") from None
        return document
    return json_schemas(collect(load_module(source)))


def _filter(letters: list[DeadLetter], args: argparse.Namespace) -> list[DeadLetter]:
    now = time.time()
    ids = set(args.ids or ())
    return [
        letter
        for letter in letters
        if (not ids or letter.id in ids)
        and (args.type is None or letter.type == args.type)
        and (args.older_than is None or now - letter.failed_at >= args.older_than)
    ]


async def _bulk(bus: Bus, action: str, service: str, ids: list[str]) -> int:
    """Replay or purge ``ids`` in pages, with a progress bar on stderr."""
    operation = bus.replay if action == "replay" else bus.purge
    done = 0
    progress = Progress(len(ids), action)
    for start in range(0, len(ids), PAGE):
        done += await operation(service, ids[start : start + PAGE])
        progress.update(min(start + PAGE, len(ids)))
    progress.finish()
    return done


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, label: str) -> None:
        self.total = total
        self.label = label
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()

    def update(self, done: int) -> None:
        fraction = done / self.total if self.total else 1.0
        bar = "#" * int(fraction * 30)
        line = f"{self.label}: [{bar:<30}] {done}/{self.total} ({time.monotonic() - self.started:.1f}s)"
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _print_letters(letters: list[DeadLetter], *, full: bool, as_json: bool) -> None:
    for letter in letters:
        if as_json:
            record = json.loads(letter.to_json())
            if not full:
                record.pop("envelope", None)
            print(json.dumps(record, ensure_ascii=False))
        elif full:
            print(f"id:        {letter.id}\ntype:      {letter.type}\nreason:    {letter.reason}")
            print(
                f"attempts:  {letter.attempts}\nfailed at: {time.ctime(letter.failed_at)}\nsource:    {letter.source}"
            )
            print(f"error:     {letter.error}\nbody:      {json.dumps(letter.body, ensure_ascii=False)}\n")
    if not full and not as_json:
        rows = [
            (
                letter.id,
                letter.type,
                letter.reason,
                str(letter.attempts),
                time.ctime(letter.failed_at),
                letter.error[:60],
            )
            for letter in letters
        ]
        _table(("ID", "TYPE", "REASON", "ATTEMPTS", "FAILED AT", "ERROR"), rows)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())
