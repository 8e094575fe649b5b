from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycomms.spi import DeadLetter, Envelope, EnvelopeError, NodeInfo, new_id, redact_url


def make(body: bytes = b'{"a":1}', **kw: object) -> Envelope:
    fields: dict[str, object] = {"id": new_id(), "type": "t", "kind": "event", "source": "n1", "body": body}
    fields.update(kw)
    return Envelope(**fields)  # type: ignore[arg-type]


def test_encode_is_a_cloudevent_with_the_body_as_data() -> None:
    env = make(headers={"traceparent": "00-x"}, key="k", correlation_id="c", time=1.5)
    doc = json.loads(env.encode())
    assert doc["data"] == {"a": 1}
    assert (doc["type"], doc["kind"], doc["partitionkey"], doc["correlationid"]) == ("t", "event", "k", "c")
    assert doc["traceparent"] == "00-x"
    assert (doc["specversion"], doc["datacontenttype"], doc["time"]) == (
        "1.0",
        "application/json",
        "1970-01-01T00:00:01.500Z",
    )
    assert "causationid" not in doc
    assert "replyto" not in doc


def test_round_trip() -> None:
    env = make(reply_to="node", causation_id="x")
    back = Envelope.decode(env.encode())
    assert back.body == {"a": 1}
    assert (back.id, back.reply_to, back.causation_id) == (env.id, "node", "x")


def test_size_is_checked_before_parsing() -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.decode(b"[" * 2000, max_size=1024)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"id": 1}',
        b'{"id":"a","type":"t","kind":"event","source":"s","headers":{"a":1}}',
        b'{"specversion":"1.0","id":"a","type":"t","kind":"event","source":"s","time":1.5}',
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.decode(data)
    assert info.value.reason == "malformed"


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_envelope_error(data: bytes) -> None:
    try:
        Envelope.decode(data)
    except EnvelopeError:
        pass


def test_ids_are_unique_and_time_sortable() -> None:
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 for i in ids)
    assert ids[0][:12] <= ids[-1][:12]


def test_dead_letter_and_node_serialization() -> None:
    letter = DeadLetter("i", "t", "s", "failed", "E: x", 3, 1.5, {"a": [1]}, "src", b"\x00\xff raw")
    assert DeadLetter.from_json(letter.to_json()) == letter
    node = NodeInfo("id", "name", ("a",), ("t1", "t2"), "host", 12, 1.0, 2.0)
    assert NodeInfo.from_json(node.to_json()) == node


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("amqp://guest:guest@h/", "amqp://guest:***@h/"),
        ("tcp://h:1?secret=hunter2&seeds=a:1", "tcp://h:1?secret=***&seeds=a:1"),
        ("memory://x", "memory://x"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "hunter2" not in redact_url(url)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"headers": {"traceparent": "00-abc"}},
        {"correlation_id": "c1", "causation_id": "c0", "reply_to": "node", "key": "k"},
    ],
)
def test_decode_gives_back_every_field_on_the_fast_and_the_checked_path(fields: dict[str, Any]) -> None:
    sent = Envelope(id="i1", type="t", kind="event", source="n", body=b'{"a":1}', time=1.5, **fields)
    got = Envelope.decode(sent.encode())
    assert (got.id, got.type, got.kind, got.source, got.body, got.time) == ("i1", "t", "event", "n", {"a": 1}, 1.5)
    for name, value in fields.items():
        assert getattr(got, name) == value
    assert got.headers == fields.get("headers", {})


def test_an_integer_time_takes_the_checked_path() -> None:
    raw = b'{"v":1,"id":"i","type":"t","kind":"event","source":"n","time":7,"body":null}'
    assert Envelope.decode(raw).time == 7.0


_TEXT = st.text(min_size=1, max_size=12)


@given(
    id_=st.one_of(st.just(new_id()), _TEXT),
    source=_TEXT,
    type_=_TEXT,
    kind=st.sampled_from(["event", "command", "request", "reply"]),
    when=st.floats(min_value=0.001, max_value=4e9),
    optional=st.lists(st.one_of(st.none(), _TEXT), min_size=4, max_size=4),
)
def test_encode_is_the_json_of_the_attributes(
    id_: str, source: str, type_: str, kind: str, when: float, optional: list[str | None]
) -> None:
    """`encode`'s formatted attributes (cached per source, type and kind) are byte for
    byte the JSON of `attributes()`, escapes included."""
    correlation, causation, reply_to, key = optional
    env = Envelope(id_, type_, kind, source, b'{"n":1}', when, correlation, causation, reply_to, key)  # type: ignore[arg-type]
    expected = json.dumps({**env.attributes(), "data": {"n": 1}}, ensure_ascii=False, separators=(",", ":"))
    assert env.encode() == expected.encode()
    assert Envelope.decode(env.encode()).attributes() == env.attributes()
