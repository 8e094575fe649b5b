"""The one shape of middleware: a function from handler to handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._context import Context
    from ._messages import Message

Handler = Callable[["Message", "Context"], Awaitable[Any]]
"""A normalized handler: ``async (message, ctx) -> reply or None``."""

Middleware = Callable[[Handler], Handler]


def compose(handler: Handler, middleware: Iterable[Middleware]) -> Handler:
    """Wrap ``handler`` so that the first middleware listed is the outermost."""
    for wrap in reversed(list(middleware)):
        handler = wrap(handler)
    return handler
