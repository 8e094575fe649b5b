"""Message types used by the conformance suite (names prefixed ``conformance.``)."""

from __future__ import annotations

from pydantic import Field

from .._messages import Command, Event, Message, Request


class Ping(Event, name="conformance.ping"):
    n: int
    text: str = ""
    tags: list[str] = Field(default_factory=list)
    nested: dict[str, float] = Field(default_factory=dict)


class Empty(Event, name="conformance.empty"):
    pass


class Blob(Event, name="conformance.blob"):
    data: str


class Job(Command, name="conformance.job"):
    n: int
    sleep: float = 0.0


class Echo(Message, name="conformance.echo"):
    n: int
    text: str = ""


class Ask(Request[Echo], name="conformance.ask"):
    n: int
    text: str = ""
    sleep: float = 0.0


class Strict(Event, name="conformance.strict"):
    amount: int


class Loose(Event, name="conformance.strict"):
    """Same wire name as `Strict` with an incompatible body (for validation tests)."""

    amount: str


class Keyed(Event, name="conformance.keyed"):
    n: int


def numbered_types(count: int) -> tuple[list[type[Event]], list[type[Command]]]:
    """``count`` distinct event and command types, for the many-types scenario."""
    events = [_NUMBERED_EVENTS[i] for i in range(count)]
    commands = [_NUMBERED_COMMANDS[i] for i in range(count)]
    return events, commands


def _make_numbered() -> tuple[list[type[Event]], list[type[Command]]]:
    events: list[type[Event]] = []
    commands: list[type[Command]] = []
    for i in range(12):
        events.append(type(f"NumberedEvent{i}", (Event,), {"__annotations__": {"n": int}}, name=f"conformance.ev{i}"))
        commands.append(
            type(f"NumberedCommand{i}", (Command,), {"__annotations__": {"n": int}}, name=f"conformance.cmd{i}")
        )
    return events, commands


_NUMBERED_EVENTS, _NUMBERED_COMMANDS = _make_numbered()
