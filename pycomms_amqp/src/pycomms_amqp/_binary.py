"""CloudEvents binary mode on AMQP, as a foreign program may send it.

PyComms sends structured mode (the whole event as the body, content type
``application/cloudevents+json``). The CloudEvents RabbitMQ binding also allows binary
mode: each attribute an application header ``ce-<name>`` (``cloudEvents_<name>`` or
``cloudEvents:<name>`` in the AMQP binding), the content type property the event's
``datacontenttype`` and the body its data. Such a message is turned into the envelope
it stands for, by `pycomms.spi.Envelope.from_binary`, before the core sees it. A
message whose content type is the structured one is never looked at here.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from pycomms.spi import Envelope

PREFIXES = ("ce-", "cloudEvents_", "cloudEvents:")
"""Header prefixes of CloudEvents attributes: RabbitMQ binding, then the AMQP binding's two."""


def binary_attributes(headers: Mapping[str, Any], content_type: str | None) -> dict[str, str] | None:
    """The CloudEvents attributes of a binary-mode message, or None when its headers
    carry no ``specversion`` (it is not one)."""
    attributes: dict[str, str] = {}
    for name, value in headers.items():
        for prefix in PREFIXES:
            if name.startswith(prefix):
                attributes[name[len(prefix) :]] = _text(value)
                break
    if "specversion" not in attributes:
        return None
    if content_type:
        attributes["datacontenttype"] = content_type
    return attributes


def structured(attributes: Mapping[str, str], body: bytes, max_size: int) -> bytes:
    """The structured-mode bytes of a binary-mode message (raises `EnvelopeError`)."""
    return Envelope.from_binary(attributes, body, max_size).encode()


def _text(value: Any) -> str:
    """A header value as the string CloudEvents' canonical form gives it."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):  # an AMQP timestamp: whole seconds, UTC
        when = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        return when.isoformat().replace("+00:00", "Z")
    return str(value)
