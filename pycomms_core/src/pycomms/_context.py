"""`Context`: what a handler knows about the message it handles, and the `Outlet` it
sends through (the bus hands one in; the context never sees the bus itself)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._envelope import Kind, new_id
from ._messages import Command, Event, Message, Request
from .spi import NodeInfo

R = TypeVar("R", bound=Message)

Emit = Callable[[Kind, Iterable[Message], str | None, dict[str, str] | None, str | None, str | None], Awaitable[object]]
"""``emit(kind, messages, key, headers, correlation_id, causation_id)``: publish or send."""
Ask = Callable[[Any, float, dict[str, str] | None, str | None, str | None, str], Awaitable[Any]]
"""``ask(request, timeout, headers, correlation_id, causation_id, message_id)``: the typed reply."""


@dataclass(frozen=True, slots=True)
class Outlet:
    """What a handler's messages leave through: this node, emitting, asking."""

    node: NodeInfo
    emit: Emit
    ask: Ask


class Context:
    """Per-delivery facts, and ``publish``/``send``/``request`` that carry the
    correlation on: messages sent from a handler share its ``correlation_id`` and have
    the handled message's id as their ``causation_id``."""

    __slots__ = ("_outlet", "attempt", "causation_id", "correlation_id", "headers", "message_id", "node", "service")

    def __init__(
        self,
        outlet: Outlet,
        *,
        message_id: str,
        correlation_id: str | None,
        causation_id: str | None,
        attempt: int,
        headers: dict[str, str],
        service: str,
    ) -> None:
        self._outlet = outlet
        self.message_id = message_id
        self.correlation_id = correlation_id
        self.causation_id = causation_id
        self.attempt = attempt
        self.headers = headers
        self.service = service
        self.node: NodeInfo = outlet.node

    def __repr__(self) -> str:
        return f"<Context message_id={self.message_id} attempt={self.attempt} service={self.service!r}>"

    def _lineage(self) -> tuple[str, str]:
        return self.correlation_id or self.message_id, self.message_id

    async def publish(self, *events: Event, key: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Publish events caused by the message being handled."""
        correlation, causation = self._lineage()
        await self._outlet.emit("event", events, key, headers, correlation, causation)

    async def send(self, *commands: Command, key: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Send commands caused by the message being handled."""
        correlation, causation = self._lineage()
        await self._outlet.emit("command", commands, key, headers, correlation, causation)

    async def request(self, request: Request[R], *, timeout: float, headers: dict[str, str] | None = None) -> R:
        """Ask another service, carrying the correlation on."""
        correlation, causation = self._lineage()
        return await self._outlet.ask(request, timeout, headers, correlation, causation, new_id())  # type: ignore[no-any-return]
