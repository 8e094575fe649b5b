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
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._middleware import Middleware
    from ._service import Service
    from .spi import BackendConfig, DeadLetter, SchemeInfo, Transport

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
def pycomms_middleware(service: Service) -> Middleware | None:
    """Return a middleware to wrap every handler of ``service``, or ``None``.

    A middleware has one shape, ``Callable[[Handler], Handler]`` where a handler is
    ``async (message, ctx) -> reply | None``. It is applied once per handler when the
    bus starts; the wrapped handler then runs per message without pluggy involved.
    Middleware from plugins wraps outside the core's own pipeline (retries and dead
    letters see exceptions raised by a middleware like those of the handler).
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
