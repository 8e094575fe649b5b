"""Spans and metrics of what a bus sends: a PRODUCER span per `publish`/`send` call
(``publish <type>``, ``send <type>``) whose context travels in the messages' headers,
and a CLIENT span per request (``request <type>``), from the call to its reply."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, set_span_in_context

from pycomms import Message, Request
from pycomms.hookspecs import AskMiddleware, EmitMiddleware
from pycomms.spi import Envelope, NodeInfo

from ._telemetry import (
    BATCH_COUNT,
    CLIENT_ID,
    CONVERSATION_ID,
    DESTINATION,
    ERROR_TYPE,
    MESSAGE_ID,
    NO_SPAN,
    OPERATION_NAME,
    OPERATION_TYPE,
    REPLY_EVENT,
    REPLY_TYPE,
    SETTER,
    SYSTEM,
    Telemetry,
)

_VERB = {"event": "publish", "command": "send", "request": "request"}


def error_type(exc: BaseException) -> str:
    """``error.type``: the exception's class, qualified unless it is a builtin."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class _Operations:
    """Per (kind, destination): the span name, the span's and the metrics' attributes
    and the sent-messages cell, made once (the attributes are the same every time)."""

    def __init__(self, t: Telemetry, node: NodeInfo, system: str) -> None:
        self._t = t
        self._system = system
        self._node = node.id
        self._known: dict[
            tuple[str, str | None, str | None], tuple[str, dict[str, Any], dict[str, Any], list[int]]
        ] = {}
        self._creates: dict[str, dict[str, Any]] = {}

    def get(
        self, kind: str, destination: str | None, error: str | None = None
    ) -> tuple[str, dict[str, Any], dict[str, Any], list[int]]:
        key = (kind, destination, error)
        found = self._known.get(key)
        if found is None:
            verb = _VERB.get(kind, kind)
            metric = {SYSTEM: self._system, OPERATION_NAME: verb, OPERATION_TYPE: "send"}
            if destination is not None:
                metric[DESTINATION] = destination
            if error is not None:
                metric[ERROR_TYPE] = error
            name = f"{verb} {destination}" if destination else verb
            found = (name, {**metric, CLIENT_ID: self._node}, metric, self._t.sent.cell(metric))
            self._known[key] = found
        return found

    def create(self, destination: str) -> dict[str, Any]:
        """Attributes of a ``create`` span (one message of a batch)."""
        found = self._creates.get(destination)
        if found is None:
            found = self._creates[destination] = {
                SYSTEM: self._system,
                OPERATION_NAME: "create",
                OPERATION_TYPE: "create",
                DESTINATION: destination,
                CLIENT_ID: self._node,
            }
        return found


def emit_middleware(t: Telemetry, node: NodeInfo, system: str) -> EmitMiddleware:
    """Wraps a bus's emit: one span per call around the hand-over to the backend."""
    operations = _Operations(t, node, system)
    tracer, setter, inject, record = t.tracer, SETTER, propagate.inject, t.operation_duration.record
    producer, tracing = SpanKind.PRODUCER, t.tracing()

    def creations(batch: Sequence[Message], headers: Any) -> tuple[list[dict[str, str]], list[Link], list[Span]]:
        """A ``create <type>`` span per message, its context in that message's
        headers; the links to them for the batch's send span. The caller ends them
        once the emit returned the messages' ids."""
        carried, links, creates = [], [], []
        for n, message in enumerate(batch):
            create = tracer.start_span(
                f"create {message.type_name}", kind=producer, attributes=operations.create(message.type_name)
            )
            creates.append(create)
            one = dict(_nth(headers, n) or {})
            inject(one, context=set_span_in_context(create), setter=setter)
            carried.append(one)
            links.append(Link(create.get_span_context()))
        return carried, links, creates

    def wrap(inner: Any) -> Any:
        async def emit(
            kind: Any,
            messages: Iterable[Message],
            key: str | None,
            headers: dict[str, str] | list[dict[str, str]] | None,
            correlation_id: str | None,
            causation_id: str | None,
            connection: Any = None,
            /,
        ) -> Sequence[Envelope]:
            if not t.on:
                return await inner(kind, messages, key, headers, correlation_id, causation_id, connection)  # type: ignore[no-any-return]
            batch = messages if isinstance(messages, tuple | list) else tuple(messages)
            if not batch:
                return await inner(kind, batch, key, headers, correlation_id, causation_id, connection)  # type: ignore[no-any-return]
            destination: str | None = batch[0].type_name
            if len(batch) > 1 and any(m.type_name != destination for m in batch):
                destination = None
            name, attrs, metric, sent = operations.get(kind, destination)
            if len(batch) > 1 or correlation_id:
                attrs = dict(attrs)
                if len(batch) > 1:
                    attrs[BATCH_COUNT] = len(batch)
                if correlation_id:
                    attrs[CONVERSATION_ID] = correlation_id
            start = time.perf_counter()
            carried: dict[str, str] | list[dict[str, str]] | None = headers
            links: list[Link] | None = None
            creates: list[Span] = []
            if tracing and len(batch) > 1:  # a creation context per message, linked from the send span
                carried, links, creates = creations(batch, headers)
            scope = (
                tracer.start_as_current_span(
                    name,
                    kind=producer if links is None else SpanKind.CLIENT,
                    attributes=attrs,
                    links=links,
                    record_exception=False,
                    set_status_on_exception=False,
                )
                if tracing
                else NO_SPAN
            )
            with scope as span:
                if tracing and links is None:
                    carried = dict(_nth(headers, 0) or {})
                    inject(carried, setter=setter)
                try:
                    envelopes: Sequence[Envelope] = await inner(
                        kind, batch, key, carried, correlation_id, causation_id, connection
                    )
                except BaseException as exc:
                    for create in creates:
                        create.end()
                    failure = _failed(span, exc)
                    _, _, metric, sent = operations.get(kind, destination, failure)
                    sent[0] += len(batch)
                    record(time.perf_counter() - start, metric)
                    raise
                if tracing:
                    _name_messages(span, creates, envelopes)
            sent[0] += len(batch)
            record(time.perf_counter() - start, metric)
            return envelopes

        return emit

    return wrap


def ask_middleware(t: Telemetry, node: NodeInfo, system: str) -> AskMiddleware:
    """Wraps a bus's ask: a CLIENT span from the request to its reply (or failure)."""
    operations = _Operations(t, node, system)
    tracer, setter, inject, record = t.tracer, SETTER, propagate.inject, t.operation_duration.record
    tracing = t.tracing()

    def wrap(inner: Any) -> Any:
        async def ask(
            request: Request[Any],
            timeout: float,
            headers: dict[str, str] | None,
            correlation_id: str | None,
            causation_id: str | None,
            message_id: str,
            /,
        ) -> Any:
            if not t.on:
                return await inner(request, timeout, headers, correlation_id, causation_id, message_id)
            name, attrs, metric, sent = operations.get("request", request.type_name)
            attrs = {**attrs, MESSAGE_ID: message_id}
            if correlation_id:
                attrs[CONVERSATION_ID] = correlation_id
            start = time.perf_counter()
            scope = (
                tracer.start_as_current_span(
                    name, kind=SpanKind.CLIENT, attributes=attrs, record_exception=False, set_status_on_exception=False
                )
                if tracing
                else NO_SPAN
            )
            with scope as span:
                carried = headers
                if tracing:
                    carried = dict(headers) if headers else {}
                    inject(carried, setter=setter)
                try:
                    reply = await inner(request, timeout, carried, correlation_id, causation_id, message_id)
                    if tracing:
                        span.add_event(REPLY_EVENT, {REPLY_TYPE: reply.type_name})
                except BaseException as exc:
                    failure = _failed(span, exc)
                    _, _, metric, sent = operations.get("request", request.type_name, failure)
                    sent[0] += 1
                    record(time.perf_counter() - start, metric)
                    raise
            sent[0] += 1
            record(time.perf_counter() - start, metric)
            return reply

        return ask

    return wrap


def _name_messages(span: Span, creates: list[Span], envelopes: Sequence[Envelope]) -> None:
    """``messaging.message.id`` on the span of each message: the send span of a
    single message, else each message's create span, which then ends (an ended
    span takes no attribute)."""
    envelopes = envelopes or ()  # tolerate a foreign wrapper that returns nothing
    if not creates:
        if len(envelopes) == 1:
            span.set_attribute(MESSAGE_ID, envelopes[0].id)
        return
    for n, create in enumerate(creates):
        if n < len(envelopes):
            create.set_attribute(MESSAGE_ID, envelopes[n].id)
        create.end()


def _nth(headers: dict[str, str] | list[dict[str, str]] | None, n: int) -> dict[str, str] | None:
    """The headers of the ``n``-th message (given for all, or one dict each)."""
    return headers[n] if isinstance(headers, list) else headers


def _failed(span: trace.Span, exc: BaseException) -> str:
    """The call raised: the span says so (``error.type``, status, exception event)."""
    failure = error_type(exc)
    span.set_attribute(ERROR_TYPE, failure)
    if isinstance(exc, Exception):
        span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))
    return failure
