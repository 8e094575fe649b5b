"""The CloudEvents MQTT binding as PyComms uses it, both ways.

Sent: structured mode (payload = ``Envelope.encode()``, MQTT 5 Content Type
``application/cloudevents+json``); a request also carries MQTT 5 Response Topic and
Correlation Data. PyComms' own delivery facts travel as user properties that are not
CloudEvents attributes (a ``-`` is not allowed in those names): ``pycomms-attempt`` and
``pycomms-due`` (UNIX ms before which a retry must not run).

Received: structured mode, or binary mode (user properties = the CloudEvents
attributes, payload = the data, Content Type = ``datacontenttype``), which is what a
device writes with ``mosquitto_pub -D publish user-property ...``.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pycomms.spi import Envelope, EnvelopeError

STRUCTURED = "application/cloudevents+json"
ATTEMPT = "pycomms-attempt"
DUE = "pycomms-due"
RESPONSE_PREFIX = "mqtt-response:"
"""``reply_to`` given to a request that came with an MQTT Response Topic but no
``replyto`` attribute (a device's request): ``mqtt-response:<correlation b64>:<topic>``."""


def _plain() -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = STRUCTURED
    return props


class _Packed(Properties):
    """Properties packed once: paho packs a message's properties again for every PUBLISH
    it writes, and its packing is slow pure Python."""

    def __init__(self, source: Properties) -> None:
        super().__init__(source.packetType)  # type: ignore[no-untyped-call]
        self.__dict__.update(source.__dict__)
        packed = source.pack()  # type: ignore[no-untyped-call]
        object.__setattr__(self, "_packed", packed)  # Properties' __setattr__ takes property names only

    def pack(self) -> bytes:
        packed: bytes = self.__dict__["_packed"]
        return packed


PLAIN = _Packed(_plain())
"""The properties of an ordinary message, built and packed once (paho's Properties are
costly to build and are only read when a packet is packed)."""


def properties(
    *, attempt: int = 1, due: float = 0.0, response_topic: str | None = None, correlation: bytes | None = None
) -> Properties:
    if attempt <= 1 and not due and response_topic is None and correlation is None:
        return PLAIN
    props = _plain()
    user: list[tuple[str, str]] = []
    if attempt > 1:
        user.append((ATTEMPT, str(attempt)))
    if due:
        user.append((DUE, str(int(due * 1000))))
    if user:
        props.UserProperty = user
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if correlation is not None:
        props.CorrelationData = correlation
    return props


def reply_target(reply_to: str) -> tuple[str, bytes] | None:
    """The device's (response topic, correlation data) behind a synthetic ``reply_to``."""
    if not reply_to.startswith(RESPONSE_PREFIX):
        return None
    encoded, _, topic = reply_to[len(RESPONSE_PREFIX) :].partition(":")
    try:
        return topic, base64.urlsafe_b64decode(encoded)
    except ValueError:
        return None


@dataclass(slots=True)
class Incoming:
    """What a delivery needs of one received message."""

    data: bytes
    attempt: int
    due: float


def incoming(message: MQTTMessage, max_size: int, own_replies: str) -> Incoming:
    """Read a received message (either binding mode) into envelope bytes and delivery
    facts. Anything PyComms cannot read is passed on as it came, for the core to
    dead-letter with its reason."""
    payload = bytes(message.payload)
    props = message.properties
    user: dict[str, str] = {}
    content_type = None
    response_topic = correlation = None
    if props is not None:
        user = dict(getattr(props, "UserProperty", ()) or ())
        content_type = getattr(props, "ContentType", None)
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
    attempt = _int(user.pop(ATTEMPT, None), 1)
    due = _int(user.pop(DUE, None), 0) / 1000
    data = payload
    envelope: Envelope | None = None
    if "specversion" in user and content_type != STRUCTURED and len(payload) <= max_size:
        attributes = dict(user)
        if content_type:
            attributes.setdefault("datacontenttype", content_type)
        try:
            envelope = Envelope.from_binary(attributes, payload, max_size)
            data = envelope.encode()
        except EnvelopeError:
            pass  # the core decodes the payload again and dead-letters it with the reason
    if response_topic and not response_topic.startswith(own_replies) and len(data) <= max_size:
        try:
            envelope = envelope or Envelope.decode(data, max_size)
        except EnvelopeError:
            envelope = None
        if envelope is not None and envelope.kind == "request" and not envelope.reply_to:
            token = base64.urlsafe_b64encode(correlation or b"").decode("ascii")
            data = _with_reply_to(envelope, f"{RESPONSE_PREFIX}{token}:{response_topic}").encode()
    return Incoming(data, max(attempt, 1), due)


def _with_reply_to(env: Envelope, reply_to: str) -> Envelope:
    return Envelope(
        id=env.id,
        type=env.type,
        kind=env.kind,
        source=env.source,
        body=env.body,
        time=env.time,
        correlation_id=env.correlation_id,
        causation_id=env.causation_id,
        reply_to=reply_to,
        key=env.key,
        headers=dict(env.headers),
        content_type=env.content_type,
    )


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def now() -> float:
    return time.time()
