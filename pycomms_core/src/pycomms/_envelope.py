"""The logical envelope every backend carries, and its wire encoding: a CloudEvents 1.0 event.

See docs/wire-format.md. In structured mode (`Envelope.encode`) the envelope is one
CloudEvents JSON document, the message's own JSON (made by pydantic's serializer) spliced
in as ``data`` so the body is never serialized twice. Transports whose CloudEvents
protocol binding carries attributes beside the payload use `Envelope.to_binary` and
`Envelope.from_binary`. PyComms wire 1 (the pre-CloudEvents envelope) is still read.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from pydantic_core import from_json, to_json

from ._wiretime import format_time, parse_time

WIRE_VERSION = 2
"""PyComms wire 2: a CloudEvents 1.0 event. Wire 1 (PyComms' own JSON object) is still read."""
SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
"""The content type of a whole event in structured mode, for transports with a content-type property."""
Kind = Literal["event", "command", "request", "reply"]
"""What an envelope is, which decides its routing: `Transport.publish` carries the first
three, `Transport.send_reply` the last."""
KINDS: frozenset[str] = frozenset(get_args(Kind))
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024

RESERVED_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "datacontenttype",
        "data",
        "data_base64",
        "kind",
        "correlationid",
        "causationid",
        "replyto",
        "partitionkey",
    }
)
"""CloudEvents attributes PyComms sets itself; a header may not take one of these names."""


def new_id() -> str:
    """A unique, time-sortable id (32 hex digits): 12 of milliseconds, 8 random per
    process (re-drawn after fork), 12 of a counter starting at a random value."""
    return new_id_at(time.time())


def new_id_at(now: float) -> str:
    """`new_id` for a message stamped ``now`` (UNIX seconds), so one clock read serves both."""
    global _id_head
    milli = int(now * 1000)
    head = _id_head
    if head[0] != milli:  # ids made within one millisecond share their first 20 digits
        head = _id_head = (milli, f"{milli:012x}{_ID_PREFIX[0]}")
    return head[1] + hex(next(_ID_COUNTER) & 0xFFFFFFFFFFFF | 0x1000000000000)[3:]  # 12 digits, zero-padded


def _reseed_ids() -> None:
    global _ID_COUNTER, _id_head
    _ID_PREFIX[0] = os.urandom(4).hex()
    _ID_COUNTER = itertools.count(int.from_bytes(os.urandom(5), "big"))
    _id_head = (-1, "")


_ID_PREFIX = [""]
_ID_COUNTER = itertools.count()
_id_head: tuple[int, str] = (-1, "")
"""(millisecond, its 12 digits and the process's 8); replaced whole."""
_reseed_ids()
os.register_at_fork(after_in_child=_reseed_ids)


class EnvelopeError(ValueError):
    """Bytes received do not form a valid envelope (reason in ``args[0]``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def check_size(size: int, max_size: int) -> None:
    """Raise `EnvelopeError` ``too_large`` when ``size`` bytes exceed ``max_size``
    (checked before anything is parsed)."""
    if size > max_size:
        raise EnvelopeError("too_large", f"{size} bytes exceeds the limit of {max_size} bytes")


@dataclass(slots=True)
class Envelope:
    """One message in flight.

    ``body`` is the message as JSON: ``bytes`` of JSON text when built for sending,
    the parsed JSON value when decoded. ``headers`` travel as CloudEvents extension
    attributes (names of lowercase letters and digits).
    """

    id: str
    type: str
    kind: Kind
    source: str
    body: Any
    time: float = 0.0
    correlation_id: str | None = None
    causation_id: str | None = None
    reply_to: str | None = None
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = CONTENT_TYPE
    _encoded: bytes | None = field(default=None, repr=False, compare=False)

    def attributes(self) -> dict[str, str]:
        """The CloudEvents context attributes, every value a string (binary-mode bindings)."""
        attrs = {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "kind": self.kind,
            "datacontenttype": self.content_type,
        }
        if self.time:
            attrs["time"] = format_time(self.time)
        if self.correlation_id is not None:
            attrs["correlationid"] = self.correlation_id
        if self.causation_id is not None:
            attrs["causationid"] = self.causation_id
        if self.reply_to is not None:
            attrs["replyto"] = self.reply_to
        if self.key is not None:
            attrs["partitionkey"] = self.key
        if self.headers:
            for name, value in self.headers.items():
                attrs.setdefault(name, value)  # PyComms' own attributes always win
        return attrs

    def data(self) -> bytes:
        """The body as JSON bytes (CloudEvents ``data``)."""
        body = self.body
        return bytes(body) if isinstance(body, bytes | bytearray) else to_json(body)

    def encode(self) -> bytes:
        """The envelope as one CloudEvents JSON document (structured mode); cached."""
        encoded = self._encoded
        if encoded is None:
            body = self.body
            data = body if type(body) is bytes else self.data()  # an outgoing body is JSON bytes already
            head = self._head() if not self.headers and self.time and self.content_type == CONTENT_TYPE else None
            if head is None:
                head = to_json(self.attributes())[:-1]
            encoded = self._encoded = b"".join((head, b',"data":', data, b"}"))
        return encoded

    def _head(self) -> bytes | None:
        """`encode`'s attributes, byte for byte what ``to_json(self.attributes())`` gives
        less its closing brace, built from a cached part per (source, type, kind); None
        for an id that would need escaping (never one of `new_id`'s)."""
        id_ = self.id
        if not (id_.isascii() and id_.isalnum()):
            return None
        middle = _HEADS.get((self.source, self.type, self.kind))
        if middle is None:
            middle = _head_middle(self.source, self.type, self.kind)
        text = f'{{"specversion":"1.0","id":"{id_}{middle}{format_time(self.time)}"'
        # ids (and node ids) are letters and digits: quoted as they are, else escaped by to_json
        if (value := self.correlation_id) is not None:
            text += (
                f',"correlationid":"{value}"'
                if value.isalnum() and value.isascii()
                else _quoted("correlationid", value)
            )
        if (value := self.causation_id) is not None:
            text += (
                f',"causationid":"{value}"' if value.isalnum() and value.isascii() else _quoted("causationid", value)
            )
        if (value := self.reply_to) is not None:
            text += f',"replyto":"{value}"' if value.isalnum() and value.isascii() else _quoted("replyto", value)
        if self.key is not None:
            text += ',"partitionkey":' + to_json(self.key).decode()
        return text.encode()

    def to_binary(self) -> tuple[dict[str, str], bytes]:
        """Binary mode: the attributes as strings, and the data. A transport's binding
        decides how to carry them (MQTT user properties, ``ce-`` headers, ...)."""
        return self.attributes(), self.data()

    @classmethod
    def decode(cls, data: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Envelope:
        """Parse a structured-mode event (or a wire-1 envelope), checking its size
        first. Raises `EnvelopeError`."""
        if len(data) > max_size:
            check_size(len(data), max_size)
        try:
            raw = from_json(data, cache_strings="keys")  # values (ids, times) are new in every message
        except ValueError as exc:
            raise EnvelopeError("malformed", f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise EnvelopeError("malformed", "envelope is not a JSON object")
        if "specversion" in raw:
            return _from_cloudevent(cls, raw)
        version = raw.get("v", 1)
        if type(version) is int and version == 1:
            return _from_wire1(cls, raw)
        raise EnvelopeError("malformed", f"envelope is PyComms wire {version!r}; {_READS}")

    @classmethod
    def from_binary(
        cls, attributes: Mapping[str, str], data: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> Envelope:
        """A binary-mode event: attributes as strings beside the data. The size of the
        data and the attributes is checked before parsing. Raises `EnvelopeError`."""
        check_size(len(data) + sum(len(k) + len(str(v)) for k, v in attributes.items()), max_size)
        raw: dict[str, Any] = dict(attributes)
        raw.pop("data", None)
        raw.pop("data_base64", None)
        if "specversion" not in raw:
            raise EnvelopeError("malformed", "event attribute 'specversion' is missing; PyComms sends '1.0'")
        if data:
            try:
                raw["data"] = from_json(data)
            except ValueError as exc:
                raise EnvelopeError("malformed", f"data is not JSON: {exc}") from None
        return _from_cloudevent(cls, raw)


def _quoted(name: str, value: str) -> str:
    """``,"name":value`` with ``value`` JSON-escaped."""
    return f',"{name}":{to_json(value).decode()}'


_HEADS: dict[tuple[str, str, str], str] = {}
"""``","source":...,"time":"`` per (source, type, kind), JSON-escaped (see `Envelope._head`)."""


def _head_middle(source: str, type_: str, kind: str) -> str:
    if len(_HEADS) >= 4096:  # bounded: a node sees few sources and types, a relay may see many
        _HEADS.clear()
    middle = _HEADS[source, type_, kind] = (
        f'","source":{to_json(source).decode()},"type":{to_json(type_).decode()},"kind":{to_json(kind).decode()},'
        f'"datacontenttype":"{CONTENT_TYPE}","time":"'
    )
    return middle


_FAST_KEYS = frozenset(RESERVED_ATTRIBUTES - {"data_base64"})
"""The members of an event `decode` checks inline (any other: attribute by attribute)."""
_READS = f"this node reads CloudEvents {SPEC_VERSION} (PyComms wire {WIRE_VERSION}) and PyComms wire 1"


def _from_cloudevent(cls: type[Envelope], raw: dict[str, Any]) -> Envelope:
    get = raw.get
    id_, source, type_, kind = get("id"), get("source"), get("type"), get("kind")
    time_, content_type = get("time"), get("datacontenttype")
    correlation_id, causation_id, reply_to, key = (
        get("correlationid"),
        get("causationid"),
        get("replyto"),
        get("partitionkey"),
    )
    if (  # the common case, checked inline: every attribute well-typed, no extension
        _FAST_KEYS.issuperset(raw)
        and get("specversion") == SPEC_VERSION
        and type(id_) is str
        and id_
        and type(source) is str
        and source
        and type(type_) is str
        and type_
        and type(kind) is str
        and kind in KINDS
        and (time_ is None or type(time_) is str)
        and (content_type is None or content_type == CONTENT_TYPE)
        and (correlation_id is None or type(correlation_id) is str)
        and (causation_id is None or type(causation_id) is str)
        and (reply_to is None or type(reply_to) is str)
        and (key is None or type(key) is str)
    ):
        try:
            when = 0.0 if time_ is None else parse_time(time_)
        except ValueError as exc:
            raise EnvelopeError("malformed", f"event attribute 'time' {exc}") from None
        # kind is one of KINDS (checked above): a cast() here would be a call per message
        return cls(id_, type_, kind, source, get("data"), when, correlation_id, causation_id, reply_to, key, {})  # type: ignore[arg-type]
    try:  # anything else: attribute by attribute, naming what is wrong
        version = get("specversion")
        if version != SPEC_VERSION:
            raise ValueError(f"event speaks CloudEvents specversion {version!r}; {_READS}")
        return cls(
            id=_str(raw, "id", "event attribute"),
            type=_str(raw, "type", "event attribute"),
            kind=_kind(raw, "kind", "event attribute"),
            source=_str(raw, "source", "event attribute"),
            body=_data(raw),
            time=_rfc3339(time_),
            correlation_id=_opt(raw, "correlationid", "event attribute"),
            causation_id=_opt(raw, "causationid", "event attribute"),
            reply_to=_opt(raw, "replyto", "event attribute"),
            key=_opt(raw, "partitionkey", "event attribute"),
            headers=_extensions(raw),
            content_type=_content_type(content_type, "event attribute 'datacontenttype'"),
        )
    except (TypeError, ValueError) as exc:
        raise EnvelopeError("malformed", str(exc)) from None


def _from_wire1(cls: type[Envelope], raw: dict[str, Any]) -> Envelope:
    try:
        return cls(
            id=_str(raw, "id", "envelope field"),
            type=_str(raw, "type", "envelope field"),
            kind=_kind(raw, "kind", "envelope field"),
            source=_str(raw, "source", "envelope field"),
            body=raw.get("body"),
            time=_unix_time(raw.get("time")),
            correlation_id=_opt(raw, "correlation_id", "envelope field"),
            causation_id=_opt(raw, "causation_id", "envelope field"),
            reply_to=_opt(raw, "reply_to", "envelope field"),
            key=_opt(raw, "key", "envelope field"),
            headers=_headers(raw.get("headers")),
            content_type=_content_type(raw.get("content_type"), "envelope field 'content_type'"),
        )
    except (TypeError, ValueError) as exc:
        raise EnvelopeError("malformed", str(exc)) from None


def peek_type(data: bytes) -> str:
    """Best-effort type name of raw bytes, for dead letters of undecodable messages."""
    try:
        raw = from_json(data[:DEFAULT_MAX_MESSAGE_SIZE])
    except ValueError:
        return "?"
    return str(raw.get("type", "?")) if isinstance(raw, dict) else "?"


def check_headers(headers: Mapping[str, str]) -> None:
    """Raise `ValueError` unless every header can travel as a CloudEvents extension attribute."""
    for name, value in headers.items():
        if name not in _GOOD_NAMES:
            if not _is_attribute_name(name):
                raise ValueError(
                    f"header name {name!r} cannot travel as a CloudEvents extension attribute:"
                    " use lowercase ASCII letters and digits only (for example 'traceparent')"
                )
            if name in RESERVED_ATTRIBUTES:
                raise ValueError(f"header name {name!r} is an attribute PyComms sets itself; choose another name")
            if len(_GOOD_NAMES) < 1024:
                _GOOD_NAMES.add(name)
        if not isinstance(value, str):
            raise ValueError(f"header {name!r} must be a string, got {type(value).__name__} {value!r}")


_GOOD_NAMES: set[str] = set()


def _is_attribute_name(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and name.isascii() and name.isalnum() and name == name.lower()


def _str(raw: dict[str, Any], name: str, what: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} {name!r} must be a non-empty string, got {value!r}")
    return value


def _kind(raw: dict[str, Any], name: str, what: str) -> Kind:
    kind = _str(raw, name, what)
    if kind not in KINDS:
        raise ValueError(f"{what} {name!r} must be one of 'event', 'command', 'request', 'reply'; got {kind!r}")
    return cast(Kind, kind)


def _opt(raw: dict[str, Any], name: str, what: str) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{what} {name!r} must be a string or absent, got {value!r}")
    return value


def _rfc3339(value: Any) -> float:
    if value is None:
        return 0.0
    if not isinstance(value, str):
        raise ValueError(f"event attribute 'time' must be an RFC 3339 timestamp string, got {value!r}")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise ValueError(f"event attribute 'time' {exc}") from None


def _unix_time(value: Any) -> float:
    if value is None:
        return 0.0
    if type(value) is float or type(value) is int:  # bool is an int subclass, not a time
        return float(value)
    raise ValueError(f"envelope field 'time' must be a number (UNIX seconds) or null, got {value!r}")


def _content_type(value: Any, what: str) -> str:
    if value is None:
        return CONTENT_TYPE
    if not isinstance(value, str) or value.partition(";")[0].strip().lower() != CONTENT_TYPE:
        raise ValueError(f"{what} must be {CONTENT_TYPE!r}, got {value!r}")
    return value


def _data(raw: dict[str, Any]) -> Any:
    if "data_base64" not in raw:
        return raw.get("data")
    if "data" in raw:
        raise ValueError("an event carries 'data' or 'data_base64', not both")
    encoded = raw["data_base64"]
    try:
        return from_json(base64.b64decode(encoded, validate=True)) if encoded else None
    except (TypeError, binascii.Error, ValueError) as exc:
        raise ValueError(f"event member 'data_base64' must be base64 of JSON text: {exc}") from None


def _extensions(raw: dict[str, Any]) -> dict[str, str]:
    """Every attribute PyComms does not set itself, as a header (CloudEvents' canonical
    string form for booleans and integers)."""
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if name in RESERVED_ATTRIBUTES or name == "specversion" or value is None:
            continue
        if not _is_attribute_name(name):
            raise ValueError(f"event attribute name {name!r} is not lowercase ASCII letters and digits")
        if isinstance(value, bool):
            headers[name] = "true" if value else "false"
        elif isinstance(value, str | int):
            headers[name] = str(value)
        else:
            raise ValueError(f"extension attribute {name!r} must be a string, integer or boolean, got {value!r}")
    return headers


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("envelope field 'headers' must map strings to strings")
    return value
