"""A worker: the ``greeter`` service, run by ``pycomms run`` like an ASGI app by uvicorn.

    .venv/bin/pycomms run examples/worker.py:greeter --url tcp://

then, in another terminal, ``.venv/bin/python examples/client.py --url tcp:// Ada``
(after the README's set-up; or ``source .venv/bin/activate`` first and drop the
``.venv/bin/``). Any cross-process backend works the same way
(``redis://localhost:6379/0``, ``amqp://guest:guest@localhost/``,
``sqlite:///greeter.db`` for ``greeter.db`` in the current directory, four slashes as
in ``sqlite:////tmp/greeter.db`` for an absolute path, ...). Stop the worker with
Ctrl-C or SIGTERM: it finishes the greetings in flight, then exits.

``memory://`` does not cross processes: with it, ``examples/client.py`` serves the
greeter in its own process instead.
"""

from __future__ import annotations

import itertools

from pycomms import Command, Context, Message, Request, Retry, Service


# Explicit wire names: they, not the Python module path, are the contract between
# the worker and its clients.
class Greet(Command, name="greeter.greet"):
    """Fire and forget: greet someone in the worker's log."""

    name: str


class Greeting(Message, name="greeter.greeting"):
    text: str
    number: int


class GetGreeting(Request[Greeting], name="greeter.get_greeting"):
    """Request/reply: compose a greeting and send it back."""

    name: str


greeter = Service("greeter", concurrency=8, retry=Retry(max_attempts=3, delay=0.5))
_counter = itertools.count(1)


@greeter.on
async def greet(command: Greet, ctx: Context) -> None:
    print(f"greeting {command.name} (message {ctx.message_id}, attempt {ctx.attempt})", flush=True)


@greeter.on
async def get_greeting(request: GetGreeting) -> Greeting:
    return Greeting(text=f"Hello, {request.name}!", number=next(_counter))
