"""The message types the CLI tests type on the command line (``tests/cli/cli_messages.py:Note``).

Explicit wire names: the CLI loads this file as a script, the test process imports it
as a module, and only the names have to agree.
"""

from __future__ import annotations

from pycomms import Command, Event, Message, Request


class Note(Event, name="cli.note"):
    text: str


class Job(Command, name="cli.job"):
    n: int


class Answer(Message, name="cli.answer"):
    n: int


class Ask(Request[Answer], name="cli.ask"):
    n: int


class Unhandled(Request[Answer], name="cli.unhandled"):
    """A request type no service handles: the CLI must time out, not hang."""

    n: int
