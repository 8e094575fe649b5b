"""`MqttTransport`: PyComms over an MQTT 5 broker (see docs/backends/mqtt.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.client import MQTTMessage
from pydantic_core import from_json, to_json

from pycomms import ConfigError, OperationError, PublishError
from pycomms.spi import BackendConfig, DeadLetter, Envelope, NodeInfo, ReplySink, Subscription, stop_tasks

from ._capabilities import CAPABILITIES
from ._errors import QUIET_ERRORS, address, describe, map_mqtt_errors
from ._link import Endpoint, Link, Session
from ._options import MqttOptions
from ._receiver import MqttReceiver, Owner
from ._retained import clear_retained, end_session, read_retained
from ._topics import Topics
from ._wire import properties, reply_target

log = logging.getLogger("pycomms.mqtt")

NO_MATCHING_SUBSCRIBERS = 0x10


class MqttTransport:
    """One bus's connection to an MQTT 5 broker: a node link (publish, replies,
    presence with a Last Will) and one session link per consuming service."""

    capabilities = CAPABILITIES

    def __init__(self, config: BackendConfig, options: MqttOptions) -> None:
        self.config = config
        self.options = options
        self.topics = Topics(options.topic_prefix, config.namespace)
        self.endpoint = _endpoint(config, options)
        self._node: NodeInfo | None = None
        self._link: Link | None = None
        self._slots: dict[str, int] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        self._node = node
        presence = self.topics.node(node.id)

        def on_reply(message: MQTTMessage, generation: int) -> None:
            replies(bytes(message.payload))

        session = Session(
            f"{self.topics.root}/node/{node.id}",
            will=aiomqtt.Will(presence, b"", qos=1, retain=True),
            subscriptions=(self.topics.reply(node.id),),
        )
        self._link = Link(self.endpoint, session, on_message=on_reply)
        await self._link.start()
        await self._announce()
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="mqtt presence")

    async def close(self) -> None:
        await stop_tasks([self._heartbeat], give_up_after=2.0)
        link = self._link
        if link is None:
            return
        if self._node is not None and link.connected:
            try:
                async with asyncio.timeout(min(2.0, self.options.operation_timeout)):
                    await link.publish(self.topics.node(self._node.id), b"", retain=True, what="leaving presence")
            except QUIET_ERRORS as exc:
                log.warning("mqtt: could not leave presence at close (the Last Will does it): %s", describe(exc))
        await link.close()

    # -- publishing ----------------------------------------------------------------

    def _publisher(self) -> Link:
        if self._link is None:
            raise PublishError("mqtt: the transport is not open")
        return self._link

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        link = self._publisher()
        if len(envelopes) == 1:
            await self._publish_one(link, envelopes[0])
        else:
            await asyncio.gather(*(self._publish_one(link, env) for env in envelopes))

    async def _publish_one(self, link: Link, env: Envelope) -> None:
        if env.kind == "event":
            await link.publish(self.topics.event(env.type), env.encode(), properties=properties())
        elif env.kind == "request" and env.reply_to:
            props = properties(response_topic=self.topics.reply(env.reply_to), correlation=env.id.encode())
            await link.publish(self.topics.command(env.type), env.encode(), properties=props, what="request")
        else:
            data = env.encode()
            code = await link.publish(self.topics.command(env.type), data, properties=properties(), what="send")
            if code == NO_MATCHING_SUBSCRIBERS:  # no service subscribed: kept until one does
                await self._park(link, env, data)

    async def _park(self, link: Link, env: Envelope, data: bytes) -> None:
        """Keep a command no service subscribed to as a retained message, which the first
        service to subscribe takes (`MqttReceiver._take_parked`, after its SUBACK). One that
        subscribed between the send and the parking took what was parked before this copy
        was stored, so the command is sent once more: if that reached a service, the copy
        is taken back (a service may have taken it meanwhile: then it arrives twice, as
        at-least-once allows); if not, the next service to subscribe finds the copy."""
        parked = self.topics.parked(env.type, env.id)
        await link.publish(parked, data, retain=True, what="send (parking)")
        try:  # the command is safe from here on: a failure only leaves it parked
            command = self.topics.command(env.type)
            if await link.publish(command, data, properties=properties(), what="send") == 0:
                await link.publish(parked, b"", retain=True, what="send (taking back a parked copy)")
        except QUIET_ERRORS as exc:
            log.warning("mqtt: %s %s stays parked: %s", env.type, env.id, describe(exc))

    async def send_reply(self, envelope: Envelope) -> None:
        link = self._publisher()
        reply_to = envelope.reply_to or ""
        target = reply_target(reply_to)
        if target is not None:
            topic, correlation = target
            await link.publish(topic, envelope.encode(), properties=properties(correlation=correlation), what="reply")
            return
        await link.publish(self.topics.reply(reply_to), envelope.encode(), properties=properties(), what="reply")

    # -- consuming -----------------------------------------------------------------

    async def subscribe(self, subscription: Subscription) -> MqttReceiver:
        if self._link is None or self._node is None:
            raise OperationError("mqtt: subscribe before open")
        owner = Owner(
            endpoint=self.endpoint,
            topics=self.topics,
            options=self.options,
            max_size=self.config.max_message_size,
            node_id=self._node.id,
            publisher=self._link,
            taken_slots=self._taken_slots,
            announce=self._claim,
        )
        receiver = MqttReceiver(owner, subscription)
        await receiver.open()
        return receiver

    async def _taken_slots(self, service: str) -> dict[str, int]:
        taken: dict[str, int] = {}
        for node_id, raw in (await self._presence()).items():
            if node_id != (self._node.id if self._node else None):
                slot = (raw.get("slots") or {}).get(service)
                if isinstance(slot, int):
                    taken[node_id] = slot
        return taken

    async def _claim(self, service: str, slot: int) -> None:
        self._slots[service] = slot
        await self._announce()

    # -- presence ------------------------------------------------------------------

    def _presence_payload(self) -> bytes:
        assert self._node is not None
        raw = from_json(self._node.seen().to_json())
        raw["slots"] = dict(self._slots)
        raw["heartbeat"] = self.options.heartbeat
        return to_json(raw)

    async def _announce(self) -> None:
        assert self._node is not None
        await self._publisher().publish(
            self.topics.node(self._node.id), self._presence_payload(), retain=True, what="presence"
        )

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat)
            try:
                await self._announce()
            except QUIET_ERRORS as exc:
                log.warning("mqtt: presence refresh failed: %s", describe(exc))

    async def _presence(self) -> dict[str, dict[str, Any]]:
        found = await read_retained(self.endpoint, self.topics, [self.topics.nodes], "reading presence")
        now = time.time()
        live: dict[str, dict[str, Any]] = {}
        for payload in found.values():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                raw = from_json(payload)
                beat = float(raw.get("heartbeat", self.options.heartbeat))
                if now - float(raw.get("last_seen", 0.0)) <= 3 * beat:
                    live[str(raw["id"])] = raw
        return live

    async def nodes(self) -> list[NodeInfo]:
        nodes = []
        for raw in (await self._presence()).values():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                nodes.append(NodeInfo.from_json(to_json(raw)))
        return sorted(nodes, key=lambda n: n.started_at)

    # -- dead letters ----------------------------------------------------------------

    async def _letters(self, service: str) -> dict[str, DeadLetter]:
        found = await read_retained(
            self.endpoint, self.topics, [self.topics.dead_letters(service)], "reading dead letters"
        )
        letters: dict[str, DeadLetter] = {}
        for topic, payload in found.items():
            try:
                letters[topic] = DeadLetter.from_json(payload)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("mqtt: unreadable dead letter at %s: %s", topic, describe(exc))
        return dict(sorted(letters.items(), key=lambda item: (item[1].failed_at, item[1].id)))

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        return list((await self._letters(service)).values())[:limit]

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        link = self._publisher()
        chosen = {t: d for t, d in (await self._letters(service)).items() if ids is None or d.id in set(ids)}
        direct = self.topics.direct(service)
        with map_mqtt_errors(OperationError, f"mqtt: replay on {self.endpoint.address}"):
            for topic, letter in chosen.items():
                await link.publish(direct, letter.envelope, properties=properties(), what="replay")
                await link.publish(topic, b"", retain=True, what="replay")
        return len(chosen)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        chosen = [t for t, d in (await self._letters(service)).items() if ids is None or d.id in set(ids)]
        return await clear_retained(self._publisher(), chosen, "purge")

    # -- namespace -------------------------------------------------------------------

    async def drop_namespace(self) -> int:
        """End every persistent session the namespace recorded and clear every retained
        message under its root (presence, dead letters, session records)."""
        found = await read_retained(self.endpoint, self.topics, [self.topics.everything], "drop")
        records = self.topics.session_records.removesuffix("+/+")
        sessions = [payload.decode("utf-8", "replace") for topic, payload in found.items() if topic.startswith(records)]
        for client_id in sessions:
            await end_session(self.endpoint, client_id, "drop")
        cleared = await clear_retained(self._publisher(), list(found), "drop")
        return len(sessions) + cleared


def _endpoint(config: BackendConfig, options: MqttOptions) -> Endpoint:
    parts = urlsplit(config.url)
    try:
        port = parts.port or (8883 if config.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise ConfigError(f"mqtt: the port of {config.redacted_url} is not a number ({exc})") from None
    tls = _tls(options) if config.scheme == "mqtts" else None
    return Endpoint(
        host=parts.hostname or "localhost",
        port=port,
        address=address(config.url),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
        keepalive=math.ceil(2 * options.heartbeat),  # the broker drops a link silent for 1.5 keep-alives: 3 heartbeats
        connect_timeout=options.connect_timeout,
        operation_timeout=options.operation_timeout,
    )


def _tls(options: MqttOptions) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=options.tls_ca_file)
        if options.tls_cert_file:
            context.load_cert_chain(options.tls_cert_file, options.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt: TLS files could not be loaded: {describe(exc)}") from None
    if not options.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.sslsocket_class = _ClosingSSLSocket
    return context


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when its handshake fails: paho drops the socket of a failed TLS
    handshake without closing it (a ResourceWarning and an open file per refused connect)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise
