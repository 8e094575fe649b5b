"""The one shape of middleware: a function from handler to handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._context import Context
    from ._envelope import Envelope, Kind
    from ._messages import Message, Request
    from .spi import NodeInfo

Handler = Callable[["Message", "Context"], Awaitable[Any]]
"""A normalized handler: ``async (message, ctx) -> reply or None``."""

Middleware = Callable[[Handler], Handler]


def compose(handler: Handler, middleware: Iterable[Middleware]) -> Handler:
    """Wrap ``handler`` so that the first middleware listed is the outermost."""
    for wrap in reversed(list(middleware)):
        handler = wrap(handler)
    return handler


class Emit(Protocol):
    """How a bus hands out events (``kind`` "event") and commands ("command"):
    ``emit(kind, messages, key, headers, correlation_id, causation_id, connection)``;
    returns once the backend accepted every message, with the envelopes it handed
    over, in the messages' order (read-only: e.g. their ``id`` for a span; a wrapper
    returns what its inner emit returned). ``headers``: one dict for every message,
    or a list of one dict per message (in order)."""

    def __call__(
        self,
        kind: Kind,
        messages: Iterable[Message],
        key: str | None,
        headers: dict[str, str] | list[dict[str, str]] | None,
        correlation_id: str | None,
        causation_id: str | None,
        connection: Any = None,
        /,
    ) -> Awaitable[Sequence[Envelope]]: ...


class Ask(Protocol):
    """How a bus asks: ``ask(request, timeout, headers, correlation_id, causation_id,
    message_id)`` returns the typed reply; ``message_id`` is the id the request's
    envelope will carry (chosen before any middleware runs, so a middleware can name it)."""

    def __call__(
        self,
        request: Request[Any],
        timeout: float,
        headers: dict[str, str] | None,
        correlation_id: str | None,
        causation_id: str | None,
        message_id: str,
        /,
    ) -> Awaitable[Any]: ...


EmitMiddleware = Callable[[Emit], Emit]
AskMiddleware = Callable[[Ask], Ask]


def wrap_outgoing(emit: Emit, ask: Ask, hook: Any, node: NodeInfo, system: str) -> tuple[Emit, Ask]:
    """``emit`` and ``ask`` wrapped by the plugins' outgoing middleware found through
    ``hook`` (the plugin manager's hook relay), once per bus; without any, the very
    callables given, so the no-plugin path costs nothing."""
    for wrap in reversed([m for m in hook.pycomms_emit_middleware(node=node, system=system) if m is not None]):
        emit = wrap(emit)
    for wrap in reversed([m for m in hook.pycomms_request_middleware(node=node, system=system) if m is not None]):
        ask = wrap(ask)
    return emit, ask
