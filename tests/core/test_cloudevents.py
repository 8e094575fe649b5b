"""The envelope is a CloudEvents 1.0 event: the official SDK (PyPI ``cloudevents``) reads
what PyComms writes and writes what PyComms reads, in structured and binary mode; wire-1
envelopes are still read; other versions are refused, naming both versions."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from pycomms import Event
from pycomms._envelope import check_headers
from pycomms._wiretime import format_time, parse_time
from pycomms.spi import Envelope, EnvelopeError, new_id


class Placed(Event, name="shop.order_placed"):
    order_id: int
    total: float


def outgoing_envelope(**extra: object) -> Envelope:
    fields: dict[str, object] = {
        "id": new_id(),
        "type": "shop.order_placed",
        "kind": "event",
        "source": "orders-1",
        "body": Placed(order_id=7, total=9.5).model_dump_json().encode(),
        "time": 1796589928.242,
    }
    fields.update(extra)
    return Envelope(**fields)  # type: ignore[arg-type]


def test_the_sdk_reads_what_pycomms_writes() -> None:
    env = outgoing_envelope(key="order-7", correlation_id="conv-1", headers={"traceparent": "00-abc-def-01"})
    event = JSONFormat().read(CloudEvent, env.encode())
    assert (event.get_id(), event.get_type(), event.get_source()) == (env.id, "shop.order_placed", "orders-1")
    assert event.get_specversion() == "1.0"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_time() == datetime(2026, 12, 6, 20, 45, 28, 242000, tzinfo=UTC)
    assert event.get_data() == {"order_id": 7, "total": 9.5}
    assert event.get_extension("kind") == "event"
    assert event.get_extension("partitionkey") == "order-7"
    assert event.get_extension("correlationid") == "conv-1"
    assert event.get_extension("traceparent") == "00-abc-def-01"


def test_pycomms_reads_what_the_sdk_writes() -> None:
    event = CloudEvent(
        attributes={
            "id": "js-1",
            "source": "/checkout",
            "type": "shop.order_placed",
            "time": datetime(2026, 12, 6, 21, 0, 0, 500000, tzinfo=UTC),
            "datacontenttype": "application/json",
            "kind": "event",
            "partitionkey": "order-7",
            "traceparent": "00-abc-def-01",
            "subject": "order/7",
        },
        data={"order_id": 7, "total": 9.5},
    )
    env = Envelope.decode(JSONFormat().write(event))
    assert (env.id, env.type, env.kind, env.source, env.key) == (
        "js-1",
        "shop.order_placed",
        "event",
        "/checkout",
        "order-7",
    )
    assert env.time == datetime(2026, 12, 6, 21, 0, 0, 500000, tzinfo=UTC).timestamp()
    assert env.headers == {"traceparent": "00-abc-def-01", "subject": "order/7"}
    assert Placed.model_validate(env.body) == Placed(order_id=7, total=9.5)


def test_binary_mode_both_ways_with_the_sdk_rabbitmq_binding() -> None:
    env = outgoing_envelope(reply_to="node-9", causation_id="c-1", headers={"tracestate": "k=v"})
    attributes, data = env.to_binary()
    message = rabbitmq.RabbitMQMessage(
        headers={f"ce-{k}": v for k, v in attributes.items() if k != "datacontenttype"},
        content_type=attributes["datacontenttype"],
        body=data,
    )
    event = rabbitmq.from_binary(message, JSONFormat(), CloudEvent)
    assert event.get_data() == {"order_id": 7, "total": 9.5}
    assert event.get_extension("replyto") == "node-9"
    assert event.get_extension("tracestate") == "k=v"

    back = rabbitmq.to_binary(event, JSONFormat())
    attrs = {k.removeprefix("ce-"): v for k, v in back.headers.items()}
    attrs["datacontenttype"] = back.content_type or ""
    again = Envelope.from_binary(attrs, back.body)
    assert (again.id, again.reply_to, again.causation_id, again.headers) == (
        env.id,
        "node-9",
        "c-1",
        {"tracestate": "k=v"},
    )
    assert again.time == pytest.approx(env.time, abs=1e-3)
    assert again.body == {"order_id": 7, "total": 9.5}


def test_data_base64_is_read_as_json() -> None:
    doc = json.loads(outgoing_envelope().encode())
    doc["data_base64"] = base64.b64encode(json.dumps(doc.pop("data")).encode()).decode()
    assert Envelope.decode(json.dumps(doc).encode()).body == {"order_id": 7, "total": 9.5}


def test_wire_1_envelopes_are_still_read() -> None:
    raw = {
        "v": 1,
        "id": "a",
        "type": "t",
        "kind": "event",
        "source": "s",
        "time": 2.5,
        "headers": {"x": "y"},
        "body": [1],
    }
    env = Envelope.decode(json.dumps(raw).encode())
    assert (env.id, env.time, env.headers, env.body) == ("a", 2.5, {"x": "y"}, [1])


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"specversion": "0.3"}, "CloudEvents specversion '0.3'; this node reads CloudEvents 1.0 (PyComms wire 2)"),
        ({"specversion": "2.0"}, "specversion '2.0'"),
        ({"v": 3}, "PyComms wire 3; this node reads CloudEvents 1.0 (PyComms wire 2) and PyComms wire 1"),
    ],
)
def test_other_versions_are_refused_naming_both(doc: dict[str, object], named: str) -> None:
    base = {"id": "a", "type": "t", "kind": "event", "source": "s", "data": {}}
    with pytest.raises(EnvelopeError) as info:
        Envelope.decode(json.dumps({**base, **doc}).encode())
    assert info.value.reason == "malformed"
    assert named in info.value.detail


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"time": 1721400000.25}, "'time' must be an RFC 3339 timestamp string, got 1721400000.25"),
        ({"time": "yesterday"}, "'time' must be an RFC 3339 timestamp such as"),
        ({"time": "2026-13-01T00:00:00Z"}, "month must be in 1..12"),
        ({"kind": "bogus"}, "'kind' must be one of"),
        ({"kind": None}, "'kind' must be a non-empty string"),
        ({"datacontenttype": "text/plain"}, "'datacontenttype' must be 'application/json'"),
        ({"replyto": 5}, "'replyto' must be a string or absent, got 5"),
        ({"Trace": "x"}, "attribute name 'Trace' is not lowercase"),
        ({"ext": {"a": 1}}, "extension attribute 'ext' must be a string, integer or boolean"),
        ({"data_base64": "!!"}, "'data_base64' must be base64 of JSON text"),
    ],
)
def test_bad_attributes_are_named(change: dict[str, object], named: str) -> None:
    doc = {**json.loads(outgoing_envelope().encode()), **change}
    if "data_base64" in change:
        doc.pop("data")
    with pytest.raises(EnvelopeError) as info:
        Envelope.decode(json.dumps(doc).encode())
    assert named in info.value.detail


def test_extension_values_take_their_canonical_string_form() -> None:
    doc = {**json.loads(outgoing_envelope().encode()), "retries": 3, "urgent": True, "empty": None}
    assert Envelope.decode(json.dumps(doc).encode()).headers == {"retries": "3", "urgent": "true"}


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-Trace": "1"}, "header name 'X-Trace' cannot travel as a CloudEvents extension attribute"),
        ({"trace_id": "1"}, "'trace_id'"),
        ({"id": "1"}, "header name 'id' is an attribute PyComms sets itself"),
        ({"ok": 1}, "header 'ok' must be a string, got int 1"),
    ],
)
def test_headers_must_be_extension_attribute_names(headers: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError) as info:
        check_headers(headers)
    assert named in str(info.value)


def test_binary_size_is_checked_before_parsing() -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.from_binary({"specversion": "1.0", "id": "a" * 600}, b"[" * 600, max_size=1000)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:01.500Z", 1.5),
        ("1970-01-01T00:00:01Z", 1.0),
        ("1970-01-01T01:00:01+01:00", 1.0),
        ("1970-01-01t00:00:01.25z", 1.25),
        ("2026-12-06T20:45:28.242123456Z", 1796589928.242123456),
    ],
)
def test_rfc3339_forms(text: str, expected: float) -> None:
    assert parse_time(text) == pytest.approx(expected, abs=1e-6)


def test_time_round_trips_to_the_millisecond() -> None:
    for when in (1.0, 1796589928.2429, 1796589929.0005):
        text = format_time(when)
        assert text.endswith("Z")
        assert len(text) == 24
        assert parse_time(text) == pytest.approx(int(when * 1000) / 1000, abs=1e-6)
