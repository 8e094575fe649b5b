"""Spans and metrics of handling: a CONSUMER span per handled event or command
(``process <type>``), a SERVER span per handled request, each parented by the
producer's context found in the message's headers; a failure that will be retried or
dead-lettered is a span event naming the attempt and the error."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from pycomms import Context, Message, Reject, RetryLater, Service
from pycomms.hookspecs import Handler, Middleware

from ._producing import error_type
from ._telemetry import (
    ATTEMPT,
    CONSUMER_GROUP,
    CONVERSATION_ID,
    DEAD_LETTER_EVENT,
    DEAD_LETTER_REASON,
    DESTINATION,
    ERROR_TYPE,
    MESSAGE_ID,
    NO_SPAN,
    OPERATION_NAME,
    OPERATION_TYPE,
    REPLY_EVENT,
    REPLY_TYPE,
    RETRY_DELAY,
    RETRY_EVENT,
    SYSTEM,
    Telemetry,
)


def handler_middleware(t: Telemetry, service: Service, system: str) -> Middleware:
    """Wraps every handler of ``service``."""
    retry = service.retry
    group = {SYSTEM: system, CONSUMER_GROUP: service.name}
    active = t.active.cell(group)
    per_type: dict[str, tuple[str, SpanKind, dict[str, Any], list[int]]] = {}
    tracer, extract, attach, detach = t.tracer, propagate.extract, otel_context.attach, otel_context.detach
    record, tracing = t.process_duration.record, t.tracing()
    server = SpanKind.SERVER

    def facts(message: Message) -> tuple[str, SpanKind, dict[str, Any], list[int]]:
        """Span name and kind, metric attributes, consumed cell: once per type."""
        name = message.type_name
        found = per_type.get(name)
        if found is None:
            kind = SpanKind.SERVER if message.kind == "request" else SpanKind.CONSUMER
            metric = {**group, OPERATION_NAME: "process", OPERATION_TYPE: "process", DESTINATION: name}
            found = per_type[name] = (f"process {name}", kind, metric, t.consumed.cell(metric))
        return found

    def wrap(handler: Handler) -> Handler:
        async def handle(message: Message, ctx: Context) -> Any:
            if not t.on:
                return await handler(message, ctx)
            name, kind, metric, consumed = facts(message)
            attrs = {**metric, MESSAGE_ID: ctx.message_id, ATTEMPT: ctx.attempt}
            if ctx.correlation_id:
                attrs[CONVERSATION_ID] = ctx.correlation_id
            active[0] += 1
            consumed[0] += 1
            start = time.perf_counter()
            token = attach(extract(ctx.headers)) if tracing else None  # the producer's span and baggage
            try:
                scope = (
                    tracer.start_as_current_span(
                        name, kind=kind, attributes=attrs, record_exception=False, set_status_on_exception=False
                    )
                    if tracing
                    else NO_SPAN
                )
                with scope as span:
                    try:
                        result = await handler(message, ctx)
                        if tracing and kind is server:  # the core sends it as soon as this returns
                            span.add_event(REPLY_EVENT, {REPLY_TYPE: _type_name(result)})
                    except BaseException as exc:
                        failure: str | None = error_type(exc)
                        if isinstance(exc, Exception):
                            failure = _failed(t, span, exc, ctx.attempt, retry.max_attempts, retry.base_delay, metric)
                        record(time.perf_counter() - start, {**metric, ERROR_TYPE: failure} if failure else metric)
                        raise
            finally:
                if token is not None:
                    detach(token)
                active[0] -= 1
            record(time.perf_counter() - start, metric)
            return result

        return handle

    return wrap


def _type_name(reply: Any) -> str:
    """The message type name of a handler's reply (a wrong one is the core's to refuse)."""
    return str(getattr(reply, "type_name", None) or type(reply).__name__)


def _failed(
    t: Telemetry,
    span: Span,
    exc: Exception,
    attempt: int,
    max_attempts: int,
    base_delay: Callable[[int], float],
    metric_attrs: dict[str, Any],
) -> str | None:
    """Add the event saying what the core does next (it decides the same way:
    `Reject` dead-letters at once; otherwise another attempt until ``max_attempts``,
    then the dead letters) and mark the span failed; returns ``error.type``. A
    `RetryLater` that gets another attempt is the handler's choice, not an error: the
    span keeps its status and ``None`` is returned."""
    failure = error_type(exc)
    event: dict[str, Any] = {ATTEMPT: attempt, ERROR_TYPE: failure, "exception.message": str(exc)[:300]}
    if isinstance(exc, Reject):
        span.add_event(DEAD_LETTER_EVENT, {**event, DEAD_LETTER_REASON: "rejected"})
    elif attempt >= max_attempts:
        span.add_event(DEAD_LETTER_EVENT, {**event, DEAD_LETTER_REASON: "failed"})
    else:
        delay = exc.delay if isinstance(exc, RetryLater) else base_delay(attempt + 1)
        span.add_event(RETRY_EVENT, {**event, RETRY_DELAY: float(delay)})
        t.retries.add(1, {**metric_attrs, ERROR_TYPE: failure})
        if isinstance(exc, RetryLater):
            return None
    span.set_attribute(ERROR_TYPE, failure)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))
    return failure
