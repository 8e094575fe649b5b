"""Hook specifications: the ways a plugin extends PyComms.

Plugins are modules (or objects) registered under the setuptools entry-point group
``pycomms``::

    [project.entry-points.pycomms]
    redis = "pycomms_redis.plugin"

and implement any of the hooks below with ``@pycomms.hookimpl``. pluggy is
synchronous: hooks build objects at set-up time and never run per message, and none
of them may return a coroutine.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import pluggy

from ._middleware import Ask, AskMiddleware, Emit, EmitMiddleware, Handler, Middleware

if TYPE_CHECKING:
    from ._service import Service
    from .spi import BackendConfig, DeadLetter, NodeInfo, SchemeInfo, Transport

__all__ = ["Ask", "AskMiddleware", "Emit", "EmitMiddleware", "Handler", "Middleware", "hookimpl", "hookspec"]
"""Besides the hooks: the shapes of the middleware they return, for plugins to type with."""

hookspec = pluggy.HookspecMarker("pycomms")
hookimpl = pluggy.HookimplMarker("pycomms")


@hookspec
def pycomms_schemes() -> list[SchemeInfo]:
    """Return the URL schemes this plugin serves.

    Called by ``pycomms backends`` and when no backend accepts a URL, to tell the user
    what is installed. Every plugin that implements `pycomms_transport` should
    implement this too. Results of all plugins are concatenated.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def pycomms_transport(config: BackendConfig) -> Transport | None:
    """Build the transport for ``config``, or return ``None`` if the scheme is not yours.

    :param config: the URL (core options removed), its scheme, the namespace, the
        message size limit and the backend options (URL query merged with keyword
        options of `pycomms.connect`).

    Called once per `pycomms.connect`, before anything is opened; do not do I/O here
    (the bus calls `Transport.open`). Validate the options and raise
    `pycomms.ConfigError` naming a bad one and what would be accepted.

    Stops at the first non-``None`` result (``firstresult``).
    """
    raise NotImplementedError


@hookspec
def pycomms_middleware(service: Service, system: str) -> Middleware | None:
    """Return a middleware to wrap every handler of ``service``, or ``None``.

    :param service: the service whose handlers are wrapped.
    :param system: the URL scheme of the bus's backend (``redis``, ``amqp``, ...).

    A middleware has one shape, ``Callable[[Handler], Handler]`` where a handler is
    ``async (message, ctx) -> reply | None``. It is applied once per handler when the
    bus starts; the wrapped handler then runs per message without pluggy involved.
    Middleware from plugins wraps outside the core's own pipeline (retries and dead
    letters see exceptions raised by a middleware like those of the handler).
    """
    raise NotImplementedError


@hookspec
def pycomms_emit_middleware(node: NodeInfo, system: str) -> EmitMiddleware | None:
    """Return a wrapper of how a bus publishes events and sends commands, or ``None``.

    :param node: the bus's node (id, name, services).
    :param system: the URL scheme of the bus's backend.

    An `EmitMiddleware` is ``Callable[[Emit], Emit]``; ``emit(kind, messages, key,
    headers, correlation_id, causation_id, connection)`` is what `Bus.publish`,
    `Bus.send` and a handler's ``ctx.publish``/``ctx.send`` call. A wrapper may call
    the inner emit with its own ``headers``: a dict for every message (the caller's
    headers plus its own, e.g. ``traceparent``), or a list of one dict per message
    (e.g. a creation context each); header names are carried as CloudEvents extension
    attributes, so they must be lowercase letters and digits. The emit returns the
    envelopes it handed over, in the messages' order (their ``id`` is the message
    id, e.g. ``messaging.message.id``); a wrapper returns what its inner emit
    returned. Called once per bus when it is built; the wrapped emit then runs per
    call without pluggy involved. Without any implementation the bus's path is
    untouched.
    """
    raise NotImplementedError


@hookspec
def pycomms_request_middleware(node: NodeInfo, system: str) -> AskMiddleware | None:
    """Return a wrapper of how a bus asks (`Bus.request`, ``ctx.request``), or ``None``.

    An `AskMiddleware` is ``Callable[[Ask], Ask]``; ``ask(request, timeout, headers,
    correlation_id, causation_id, message_id)`` returns the typed reply and raises as
    `Bus.request` does; ``message_id`` is the id the request's envelope will carry.
    Headers as for `pycomms_emit_middleware`; called once per bus.
    """
    raise NotImplementedError


@hookspec
def pycomms_dead_lettered(letter: DeadLetter) -> None:
    """Called after a message was stored in a service's dead letters.

    For alerting and metrics. Runs on the event loop: it must be quick and must not
    block; exceptions are logged and ignored.
    """


@hookspec
def pycomms_add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add sub-commands to the ``pycomms`` command line.

    Each added parser must set a ``handler`` default: a function taking the parsed
    ``argparse.Namespace`` and returning an exit code.
    """


@hookspec
def pycomms_run_options(parser: argparse.ArgumentParser) -> None:
    """Add options to the ``pycomms run`` command (e.g. ``--metrics-port``)."""


@hookspec
def pycomms_run(args: argparse.Namespace) -> Callable[[Any], AbstractAsyncContextManager[None]] | None:
    """``pycomms run`` is about to connect: set up (before any bus exists, so hooks
    that are called when a bus is built see it), then return ``None`` or a function
    of the open bus returning an async context manager, entered once the bus is open
    and exited when it stops serving, before it closes (e.g. an HTTP endpoint for
    metrics and health probes). The function's argument is the open `pycomms.Bus`
    (typed ``Any`` here only so that this module does not import the bus).

    :param args: the parsed command line, with the options added by
        `pycomms_run_options`.
    """
