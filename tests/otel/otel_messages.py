"""Message types and the span dump shared by the tests and their worker process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from pycomms import Command, Event, Message, Request


class OrderPlaced(Event, name="otel.order_placed"):
    order: int


class Charge(Command, name="otel.charge"):
    order: int


class Price(Message, name="otel.price"):
    cents: int


class GetPrice(Request[Price], name="otel.get_price"):
    order: int


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as plain JSON: what the trace assertions read."""
    assert span.context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
        "status": span.status.status_code.name,
    }


def dump_spans(spans: list[ReadableSpan], path: Path) -> None:
    path.write_text(json.dumps([span_record(s) for s in spans]))
