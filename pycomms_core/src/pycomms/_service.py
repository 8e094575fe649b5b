"""Services and their handlers, as declared with ``@service.on``."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from ._errors import ConfigError
from ._messages import Message, is_message_type
from ._retry import Retry

F = TypeVar("F", bound=Callable[..., Any])
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One handler as declared: its message type and how to call it."""

    message_type: type[Message]
    func: Callable[..., Any]
    takes_context: bool
    is_async: bool

    @property
    def name(self) -> str:
        return getattr(self.func, "__qualname__", repr(self.func))


class Service:
    """A named group of handlers; every running bus that serves it is an instance.

    ``concurrency`` bounds the handlers one instance runs at once; ``retry`` is the
    policy for handlers that raise. An ``ephemeral`` service is an observer: it
    handles events only, gets those published while it runs, and leaves nothing
    behind on the backend when it stops (no retention, no queue, no group).
    """

    def __init__(
        self, name: str, *, concurrency: int = 16, retry: Retry | None = None, ephemeral: bool = False
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"service name {name!r} is invalid: use 1-100 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValueError(f"Service {name!r}: concurrency must be an int >= 1, got {concurrency!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"Service {name!r}: retry must be a pycomms.Retry, got {type(retry).__name__}")
        self.name = name
        self.concurrency = concurrency
        self.retry = retry or Retry()
        self.ephemeral = bool(ephemeral)
        self.handlers: dict[str, HandlerSpec] = {}

    def __repr__(self) -> str:
        return f"Service({self.name!r}, handles={sorted(self.handlers)})"

    @overload
    def on(self, target: type[Message], /) -> Callable[[F], F]: ...
    @overload
    def on(self, target: F, /) -> F: ...

    def on(self, target: Any, /) -> Any:
        """Register a handler: ``@service.on`` (type from the first parameter's
        annotation) or ``@service.on(MessageType)``."""
        if isinstance(target, type):
            message_type = target

            def decorator(func: F) -> F:
                self._register(func, message_type)
                return func

            return decorator
        if callable(target):
            self._register(target, None)
            return target
        raise TypeError(f"@{self.name}.on takes a handler function or a message type, got {target!r}")

    def _register(self, func: Callable[..., Any], given: type[Message] | None) -> None:
        fname = getattr(func, "__qualname__", repr(func))
        try:
            params = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError) as exc:
            raise TypeError(f"handler {fname}: cannot read its signature ({exc})") from None
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        keyword_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
        if keyword_only:
            raise TypeError(f"handler {fname}: required keyword-only parameters {keyword_only} are never passed")
        if not positional or len(required) > 2:
            raise TypeError(f"handler {fname} must take (message) or (message, ctx), got {len(params)} parameters")
        message_type = given if given is not None else self._annotation(func, fname, positional[0].name)
        if not is_message_type(message_type) or message_type.kind not in ("event", "command", "request"):
            raise TypeError(
                f"handler {fname}: {message_type!r} is not a handleable message type; "
                "expected a subclass of pycomms.Event, Command or Request"
            )
        if self.ephemeral and message_type.kind != "event":
            raise TypeError(
                f"handler {fname}: service {self.name!r} is ephemeral and handles events only; "
                f"{message_type.type_name!r} is a {message_type.kind}, which must reach a lasting service"
            )
        existing = self.handlers.get(message_type.type_name)
        if existing is not None:
            raise TypeError(
                f"handler {fname}: service {self.name!r} already handles {message_type.type_name!r} "
                f"with {existing.name}; one handler per message type per service"
            )
        unwrapped = inspect.unwrap(func)
        is_async = inspect.iscoroutinefunction(unwrapped) or inspect.iscoroutinefunction(
            getattr(unwrapped, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        self.handlers[message_type.type_name] = HandlerSpec(message_type, func, len(positional) >= 2, is_async)

    @staticmethod
    def _annotation(func: Callable[..., Any], fname: str, param: str) -> Any:
        try:
            hints = typing.get_type_hints(func)
        except Exception as exc:  # NameError for unresolvable forward references, among others
            raise TypeError(
                f"handler {fname}: cannot resolve its annotations ({exc}); "
                "pass the type explicitly: @service.on(MessageType)"
            ) from None
        if param not in hints:
            raise TypeError(
                f"handler {fname}: its first parameter {param!r} has no annotation; "
                "annotate it with the message type or use @service.on(MessageType)"
            )
        return hints[param]


def check_services(services: Sequence[Service]) -> None:
    """Refuse services that cannot run together on one bus (at connect(), naming them)."""
    seen_services: set[str] = set()
    types: dict[str, type[Message]] = {}
    point_to_point: dict[str, str] = {}
    for service in services:
        if not isinstance(service, Service):
            raise TypeError(f"services must be pycomms.Service objects, got {service!r}")
        if service.name in seen_services:
            raise ConfigError(f"service {service.name!r} is given twice")
        seen_services.add(service.name)
        for type_name, spec in service.handlers.items():
            if spec.message_type.kind != "event" and type_name in point_to_point:
                raise ConfigError(
                    f"services {point_to_point[type_name]!r} and {service.name!r} both handle "
                    f"{type_name!r}; a command or request is handled by exactly one service"
                )
            if spec.message_type.kind != "event":
                point_to_point[type_name] = service.name
            known = types.setdefault(type_name, spec.message_type)
            if known is not spec.message_type:
                raise ConfigError(
                    f"two different classes use the message type name {type_name!r}: "
                    f"{known.__module__}.{known.__qualname__} and "
                    f"{spec.message_type.__module__}.{spec.message_type.__qualname__}; "
                    "give one of them another name with class ...(Event, name='...')"
                )


def service_name(service: str | Service) -> str:
    """The name of ``service`` (a `Service` or its name), checked."""
    name = service.name if isinstance(service, Service) else service
    if not isinstance(name, str) or not name:
        raise TypeError(f"service must be a Service or its name, got {service!r}")
    return name
