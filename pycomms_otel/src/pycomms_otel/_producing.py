"""Spans and metrics of what a bus sends: a PRODUCER span per `publish`/`send` call
(``publish <type>``, ``send <type>``) whose context travels in the messages' headers,
and a CLIENT span per request (``request <type>``), from the call to its reply."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from pycomms import Message, Request
from pycomms.hookspecs import AskMiddleware, EmitMiddleware
from pycomms.spi import NodeInfo

from ._telemetry import (
    BATCH_COUNT,
    CLIENT_ID,
    CONVERSATION_ID,
    DESTINATION,
    ERROR_TYPE,
    KIND,
    OPERATION_NAME,
    OPERATION_TYPE,
    SETTER,
    SYSTEM,
    Telemetry,
)

_VERB = {"event": "publish", "command": "send"}


def error_type(exc: BaseException) -> str:
    """``error.type``: the exception's class, qualified unless it is a builtin."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def emit_middleware(t: Telemetry, node: NodeInfo, system: str) -> EmitMiddleware:
    """Wraps a bus's emit: one span per call around the hand-over to the backend."""
    base = {SYSTEM: system, CLIENT_ID: node.id}
    tracer, setter, inject = t.tracer, SETTER, propagate.inject

    def wrap(inner: Any) -> Any:
        async def emit(
            kind: Any,
            messages: Iterable[Message],
            key: str | None,
            headers: dict[str, str] | None,
            correlation_id: str | None,
            causation_id: str | None,
            connection: Any = None,
            /,
        ) -> None:
            if not t.on:
                return await inner(kind, messages, key, headers, correlation_id, causation_id, connection)  # type: ignore[no-any-return]
            batch = messages if isinstance(messages, tuple | list) else tuple(messages)
            types = {m.type_name for m in batch}
            verb = _VERB.get(kind, kind)
            attrs: dict[str, Any] = {**base, OPERATION_NAME: verb, OPERATION_TYPE: "send", KIND: kind}
            destination = next(iter(types)) if len(types) == 1 else None
            if destination is not None:
                attrs[DESTINATION] = destination
            if len(batch) > 1:
                attrs[BATCH_COUNT] = len(batch)
            if correlation_id:
                attrs[CONVERSATION_ID] = correlation_id
            name = f"{verb} {destination}" if destination else verb
            start = time.perf_counter()
            with tracer.start_as_current_span(
                name, kind=SpanKind.PRODUCER, attributes=attrs, record_exception=False, set_status_on_exception=False
            ) as span:
                carried = dict(headers) if headers else {}
                inject(carried, setter=setter)
                try:
                    await inner(kind, batch, key, carried, correlation_id, causation_id, connection)
                except BaseException as exc:
                    failed(t, span, exc, attrs, start, len(batch))
                    raise
            record(t, attrs, start, len(batch))
            return None

        return emit

    return wrap


def ask_middleware(t: Telemetry, node: NodeInfo, system: str) -> AskMiddleware:
    """Wraps a bus's ask: a CLIENT span from the request to its reply (or failure)."""
    base = {SYSTEM: system, CLIENT_ID: node.id, OPERATION_NAME: "request", OPERATION_TYPE: "send", KIND: "request"}
    tracer, setter, inject = t.tracer, SETTER, propagate.inject

    def wrap(inner: Any) -> Any:
        async def ask(
            request: Request[Any],
            timeout: float,
            headers: dict[str, str] | None,
            correlation_id: str | None,
            causation_id: str | None,
            /,
        ) -> Any:
            if not t.on:
                return await inner(request, timeout, headers, correlation_id, causation_id)
            attrs: dict[str, Any] = {**base, DESTINATION: request.type_name}
            if correlation_id:
                attrs[CONVERSATION_ID] = correlation_id
            start = time.perf_counter()
            with tracer.start_as_current_span(
                f"request {request.type_name}",
                kind=SpanKind.CLIENT,
                attributes=attrs,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                carried = dict(headers) if headers else {}
                inject(carried, setter=setter)
                try:
                    reply = await inner(request, timeout, carried, correlation_id, causation_id)
                except BaseException as exc:
                    failed(t, span, exc, attrs, start, 1)
                    raise
            record(t, attrs, start, 1)
            return reply

        return ask

    return wrap


def record(t: Telemetry, attrs: dict[str, Any], start: float, count: int) -> None:
    metric_attrs = {k: v for k, v in attrs.items() if k not in (CLIENT_ID, CONVERSATION_ID, BATCH_COUNT)}
    t.sent.add(count, metric_attrs)
    t.operation_duration.record(time.perf_counter() - start, metric_attrs)


def failed(t: Telemetry, span: trace.Span, exc: BaseException, attrs: dict[str, Any], start: float, count: int) -> None:
    """The call raised: the span and the metrics say so with ``error.type``."""
    kind = error_type(exc)
    span.set_attribute(ERROR_TYPE, kind)
    if isinstance(exc, Exception):
        span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))
    record(t, {**attrs, ERROR_TYPE: kind}, start, count)
