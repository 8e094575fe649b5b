"""Building the envelope of an outgoing message: the kind checked against the
message's class, the body serialized once, the size limit enforced before sending."""

from __future__ import annotations

import time
from collections.abc import Iterable

from ._envelope import Envelope, Kind, check_headers, new_id_at
from ._errors import PublishError
from ._messages import Command, Event, Message, Request

_EXPECTED: dict[str, type[Message]] = {"event": Event, "command": Command, "request": Request}


def outgoing(
    source: str,
    max_size: int,
    kind: Kind,
    message: Message,
    key: str | None,
    headers: dict[str, str] | None,
    correlation_id: str | None,
    causation_id: str | None,
    reply_to: str | None = None,
    message_id: str | None = None,
) -> Envelope:
    """The envelope of ``message`` sent as ``kind`` by node ``source`` (with id
    ``message_id``, else a new one). Raises `TypeError` for a message of the wrong kind
    and `PublishError` over ``max_size``."""
    if (message.__class__, kind) not in _ACCEPTED:
        _check_kind(kind, message)
    if headers:
        check_headers(headers)
        headers = dict(headers)
    now = time.time()
    env = Envelope(
        message_id or new_id_at(now),
        message.type_name,
        kind,
        source,
        message.__pydantic_serializer__.to_json(message),
        now,
        correlation_id,
        causation_id,
        reply_to,
        key,
        headers or {},
    )
    size = len(env.encode())
    if size > max_size:
        raise PublishError(
            f"{message.type_name} is {size} bytes encoded, over the limit of {max_size} bytes (option max_message_size)"
        )
    return env


_ACCEPTED: set[tuple[type[Message], str]] = set()
"""(message class, kind) pairs `_check_kind` passed: the check runs once per class."""


def _check_kind(kind: Kind, message: Message) -> None:
    expected = _EXPECTED[kind]
    if not isinstance(message, expected) or (kind == "command" and isinstance(message, Request)):
        verb = {"event": "publish", "command": "send", "request": "request"}[kind]
        hint = {Event: "publish()", Command: "send()", Request: "request()"}
        actual = next(
            (h for t, h in hint.items() if isinstance(message, t)),
            "nothing: it is not an Event, Command or Request",
        )
        raise TypeError(f"{verb}() takes {expected.__name__} messages; {type(message).__name__} goes to {actual}")
    if len(_ACCEPTED) < 4096:
        _ACCEPTED.add((message.__class__, kind))


def outgoing_all(
    source: str,
    max_size: int,
    kind: Kind,
    messages: Iterable[Message],
    key: str | None,
    headers: dict[str, str] | list[dict[str, str]] | None,
    correlation_id: str | None,
    causation_id: str | None,
) -> list[Envelope]:
    """The envelopes of ``messages``. ``headers`` is one dict for all of them or, from
    an emit middleware (tracing: one creation context per message), a list of one
    dict per message, in order."""
    if isinstance(headers, list):
        pairs = zip(messages, headers, strict=True)
        return [outgoing(source, max_size, kind, m, key, h, correlation_id, causation_id) for m, h in pairs]
    if type(messages) is tuple and len(messages) == 1:  # publish() of one: no comprehension's frame
        return [outgoing(source, max_size, kind, messages[0], key, headers, correlation_id, causation_id)]
    return [outgoing(source, max_size, kind, m, key, headers, correlation_id, causation_id) for m in messages]
