"""The logical envelope every backend carries, and its JSON wire encoding.

See docs/wire-format.md. Encoding splices the message's own JSON (made by pydantic's
serializer) into the envelope so the body is never serialized twice.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from pydantic_core import from_json, to_json

WIRE_VERSION = 1
CONTENT_TYPE = "application/json"
Kind = Literal["event", "command", "request", "reply"]
"""What an envelope is, which decides its routing: `Transport.publish` carries the first
three, `Transport.send_reply` the last."""
KINDS: frozenset[str] = frozenset(get_args(Kind))
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024


def new_id() -> str:
    """A unique, time-sortable id (32 hex digits): 12 of milliseconds, 8 random per
    process (re-drawn after fork), 12 of a counter starting at a random value."""
    return f"{int(time.time() * 1000):012x}{_ID_PREFIX[0]}{next(_ID_COUNTER) & 0xFFFFFFFFFFFF:012x}"


def _reseed_ids() -> None:
    global _ID_COUNTER
    _ID_PREFIX[0] = os.urandom(4).hex()
    _ID_COUNTER = itertools.count(int.from_bytes(os.urandom(5), "big"))


_ID_PREFIX = [""]
_ID_COUNTER = itertools.count()
_reseed_ids()
os.register_at_fork(after_in_child=_reseed_ids)


class EnvelopeError(ValueError):
    """Bytes received do not form a valid envelope (reason in ``args[0]``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Envelope:
    """One message in flight.

    ``body`` is the message as JSON: ``bytes`` of JSON text when built for sending,
    the parsed JSON value when decoded.
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

    def encode(self) -> bytes:
        """The envelope as one JSON document (body spliced in as JSON); cached."""
        if self._encoded is not None:
            return self._encoded
        head = to_json(
            {
                "v": WIRE_VERSION,
                "id": self.id,
                "type": self.type,
                "kind": self.kind,
                "source": self.source,
                "time": self.time,
                "correlation_id": self.correlation_id,
                "causation_id": self.causation_id,
                "reply_to": self.reply_to,
                "key": self.key,
                "content_type": self.content_type,
                "headers": self.headers,
            }
        )
        body = self.body if isinstance(self.body, bytes | bytearray) else to_json(self.body)
        self._encoded = b"".join((head[:-1], b',"body":', body, b"}"))
        return self._encoded

    @classmethod
    def decode(cls, data: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Envelope:
        """Parse ``data``, checking its size first. Raises `EnvelopeError`."""
        if len(data) > max_size:
            raise EnvelopeError("too_large", f"{len(data)} bytes exceeds the limit of {max_size} bytes")
        try:
            raw = from_json(data)
        except ValueError as exc:
            raise EnvelopeError("malformed", f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise EnvelopeError("malformed", "envelope is not a JSON object")
        get = raw.get
        id_, type_, kind, source = get("id"), get("type"), get("kind"), get("source")
        correlation_id, causation_id, reply_to, key = (
            get("correlation_id"),
            get("causation_id"),
            get("reply_to"),
            get("key"),
        )
        headers, time_, content_type = get("headers"), get("time"), get("content_type")
        if (  # the common case, checked inline: every field well-typed (one message costs microseconds)
            type(id_) is str
            and id_
            and type(type_) is str
            and type_
            and type(kind) is str
            and kind in KINDS
            and type(source) is str
            and source
            and (correlation_id is None or type(correlation_id) is str)
            and (causation_id is None or type(causation_id) is str)
            and (reply_to is None or type(reply_to) is str)
            and (key is None or type(key) is str)
            and (headers is None or headers == {})
            and type(time_) is float
            and (content_type is None or content_type == CONTENT_TYPE)
        ):
            return cls(
                id=id_,
                type=type_,
                kind=cast(Kind, kind),
                source=source,
                body=get("body"),
                time=time_,
                correlation_id=correlation_id,
                causation_id=causation_id,
                reply_to=reply_to,
                key=key,
                headers={},
            )
        try:  # anything else: field by field, naming what is wrong
            env = cls(
                id=_str(raw, "id"),
                type=_str(raw, "type"),
                kind=_kind(raw),
                source=_str(raw, "source"),
                body=raw.get("body"),
                time=_time(raw),
                correlation_id=_opt(raw, "correlation_id"),
                causation_id=_opt(raw, "causation_id"),
                reply_to=_opt(raw, "reply_to"),
                key=_opt(raw, "key"),
                headers=_headers(raw.get("headers")),
                content_type=_content_type(raw),
            )
        except (TypeError, ValueError) as exc:
            raise EnvelopeError("malformed", str(exc)) from None
        return env


def peek_type(data: bytes) -> str:
    """Best-effort type name of raw bytes, for dead letters of undecodable messages."""
    try:
        raw = from_json(data[:DEFAULT_MAX_MESSAGE_SIZE])
    except ValueError:
        return "?"
    return str(raw.get("type", "?")) if isinstance(raw, dict) else "?"


def _str(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"envelope field {name!r} must be a non-empty string, got {value!r}")
    return value


def _kind(raw: dict[str, Any]) -> Kind:
    kind = _str(raw, "kind")
    if kind not in KINDS:
        raise ValueError(f"envelope field 'kind' must be one of 'event', 'command', 'request', 'reply'; got {kind!r}")
    return cast(Kind, kind)


def _time(raw: dict[str, Any]) -> float:
    value = raw.get("time")
    if value is None:
        return 0.0
    if type(value) is float or type(value) is int:  # bool is an int subclass, not a time
        return float(value)
    raise ValueError(f"envelope field 'time' must be a number (UNIX seconds) or null, got {value!r}")


def _content_type(raw: dict[str, Any]) -> str:
    value = raw.get("content_type")
    if value is None:
        return CONTENT_TYPE
    if not isinstance(value, str) or value.partition(";")[0].strip().lower() != CONTENT_TYPE:
        raise ValueError(f"envelope field 'content_type' must be {CONTENT_TYPE!r}, got {value!r}")
    return value


def _opt(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"envelope field {name!r} must be a string or null, got {value!r}")
    return value


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("envelope field 'headers' must map strings to strings")
    return value
