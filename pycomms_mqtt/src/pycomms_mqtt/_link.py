"""One MQTT connection kept up: connect with a deadline, reconnect with backoff,
hand incoming messages on, acknowledge by connection generation, publish until PUBACK.

aiomqtt is used through its public API except where it does not expose what PyComms
needs, which is done on its paho client: manual acknowledgement (``manual_ack_set``/``ack``,
aiomqtt issue #345, so a PUBACK leaves only after the handler settled), publishing with
the PUBACK's reason code (aiomqtt drops it: 0x10 says no subscriber matched, which
parks a command), closing the socket of a connect that passed its deadline, and moving
packets on the hot path (_paho_io.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTT_LOG_ERR, MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pycomms import ConnectError, PublishError
from pycomms.spi import stop_tasks

from ._errors import DRIVER_ERRORS, QUIET_ERRORS, TAKEN_OVER, describe, reason_code
from ._paho_io import Inbox, Pump

log = logging.getLogger("pycomms.mqtt")

REFUSED = 0x80
"""MQTT 5: a PUBACK reason code from here on says the broker did not take the message."""

MessageSink = Callable[[MQTTMessage, int], None]
"""Called with each incoming message and the generation of the connection it came on."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect; ``address`` (``host:port``) is what errors name."""

    host: str
    port: int
    address: str
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None
    keepalive: int
    connect_timeout: float
    operation_timeout: float


@dataclass(frozen=True, slots=True)
class Session:
    """The MQTT session a link asks for."""

    client_id: str
    persistent: bool = False
    session_expiry: int = 0
    receive_maximum: int | None = None
    will: aiomqtt.Will | None = None
    manual_ack: bool = False
    subscriptions: tuple[str, ...] = ()


class Link:
    """A connection that comes back after a broker restart or a cut link.

    ``on_message`` gets every incoming message (with the connection's generation);
    ``on_taken_over`` is called, and the link stops, when another connection took its
    session: the broker said so (MQTT reason 0x8E), or, after a loss without a reason
    (Mosquitto 2.0.11 just closes the socket), ``is_taken_over()`` says so."""

    def __init__(
        self,
        endpoint: Endpoint,
        session: Session,
        *,
        on_message: MessageSink | None = None,
        on_taken_over: Callable[[], None] | None = None,
        on_resubscribed: Callable[[], Awaitable[None]] | None = None,
        is_taken_over: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.session = session
        self._on_message = on_message
        self._on_taken_over = on_taken_over
        self._on_resubscribed = on_resubscribed
        self._is_taken_over = is_taken_over
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._acked: dict[int, asyncio.Future[int]] = {}
        self._subscribing: set[asyncio.Task[None]] = set()
        self.generation = 0

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def start(self) -> None:
        """Connect for the first time (``connect_timeout``), then keep connected."""
        client, inbox = await self._connect()
        self._attach(client, inbox)
        self._task = asyncio.get_running_loop().create_task(self._run(client), name=f"mqtt {self.session.client_id}")

    async def _connect(self) -> tuple[aiomqtt.Client, Inbox]:
        ep, session = self.endpoint, self.session
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if session.persistent:
            props.SessionExpiryInterval = session.session_expiry
        if session.receive_maximum is not None:
            props.ReceiveMaximum = session.receive_maximum
        client = aiomqtt.Client(
            ep.host,
            ep.port,
            username=ep.username,
            password=ep.password,
            identifier=session.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=session.will,
            clean_start=not session.persistent,
            keepalive=ep.keepalive,
            timeout=ep.operation_timeout,
            tls_context=ep.tls,
            properties=props,
        )
        pump = Pump(client, asyncio.get_running_loop())
        client._client.on_publish = self._on_publish  # private: see the module docstring
        client._disconnected.add_done_callback(_retrieve)  # a client given up on is never awaited again
        inbox = Inbox(self._on_message or _drop, self.generation + 1)
        client._client.on_message = inbox.on_message  # private: see the module docstring
        if not logging.getLogger("mqtt").isEnabledFor(logging.DEBUG):
            client._client.disable_logger()  # paho builds a log record's arguments per packet
        if session.manual_ack:
            client._client.manual_ack_set(True)  # private: see the module docstring
        resumed = _watch_session_present(client)
        errors = _watch_errors(client)
        what = f"mqtt: connect to {ep.address}"
        try:
            async with asyncio.timeout(ep.connect_timeout):
                await client.__aenter__()
        except TimeoutError:
            pump.abandon()
            raise ConnectError(f"{what} timed out after {ep.connect_timeout}s (connect_timeout){errors()}") from None
        except asyncio.CancelledError:
            pump.abandon()
            raise
        except DRIVER_ERRORS as exc:
            _abandon(client)
            raise ConnectError(f"{what} failed: {describe(exc)}") from None
        client._client.on_log = None  # private: see the module docstring
        if session.subscriptions:
            subscribing = self._subscribe(client)
            if resumed():
                # Mosquitto 2.0 restores a session's shared subscriptions after a restart
                # only if they are made again; its queued messages arrive before the SUBACK
                # does, so the reader must run meanwhile: subscribe in the background.
                task = asyncio.get_running_loop().create_task(
                    self._resubscribe(subscribing), name=f"mqtt {session.client_id}: subscribing again"
                )
                self._subscribing.add(task)
                task.add_done_callback(self._subscribed)
            else:
                try:
                    await subscribing
                except DRIVER_ERRORS as exc:
                    _abandon(client)
                    raise ConnectError(f"mqtt: subscribe on {ep.address} failed: {describe(exc)}") from None
        return client, inbox

    async def _resubscribe(self, subscribing: Awaitable[None]) -> None:
        await subscribing
        if self._on_resubscribed is not None:
            await self._on_resubscribed()

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        topics = [(topic, 1) for topic in self.session.subscriptions]
        await client.subscribe(topics, timeout=self.endpoint.operation_timeout * 3)

    def _subscribed(self, task: asyncio.Task[None]) -> None:
        self._subscribing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("mqtt: subscribing %s again failed: %s", self.session.client_id, describe(task.exception()))  # type: ignore[arg-type]

    def _attach(self, client: aiomqtt.Client, inbox: Inbox) -> None:
        self._client = client
        self.generation = inbox.generation
        self._up.set()
        inbox.open()

    def _detach(self) -> None:
        acked, self._acked = self._acked, {}
        for future in acked.values():  # their publishers send again on the next connection
            if not future.done():
                future.set_exception(aiomqtt.MqttError("connection lost before PUBACK"))
        self._up.clear()
        self._client = None

    async def _run(self, client: aiomqtt.Client | None) -> None:
        delay = 0.1
        while not self._closing:
            if client is None:
                try:
                    client, inbox = await self._connect()
                except ConnectError as exc:
                    log.warning("%s; retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                log.info("mqtt: %s connected again to %s", self.session.client_id, self.endpoint.address)
                self._attach(client, inbox)
                delay = 0.1
            try:
                async for _ in client.messages:  # none: they go through the Inbox; this ends with the connection
                    pass
            except aiomqtt.MqttError as exc:
                self._detach()
                _abandon(client)  # its socket, should paho still hold it open (nothing if closed)
                if reason_code(exc.__cause__ or exc) == TAKEN_OVER or await self._taken_over_silently():
                    log.warning("mqtt: session %s was taken over by another connection", self.session.client_id)
                    if self._on_taken_over is not None:
                        self._on_taken_over()
                    return
                if not self._closing:
                    log.warning("mqtt: lost %s (%s); reconnecting", self.endpoint.address, describe(exc))
            client = None

    async def _taken_over_silently(self) -> bool:
        if self._closing or self._is_taken_over is None:
            return False
        try:
            return await self._is_taken_over()
        except QUIET_ERRORS as exc:
            log.debug("mqtt: could not tell whether %s was taken over: %s", self.session.client_id, describe(exc))
            return False

    async def ready(self, deadline: float) -> aiomqtt.Client:
        """The connected client, waiting until ``deadline``."""
        loop = asyncio.get_running_loop()
        while True:
            client = self._client
            if client is not None and self._up.is_set():
                return client
            if self._closing:
                raise aiomqtt.MqttError("link closed")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._up.wait()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        properties: Properties | None = None,
        retain: bool = False,
        what: str = "publish",
    ) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code once the broker sent it
        (0x10: no subscriber matched); through reconnects until ``operation_timeout``,
        then `PublishError` naming ``what`` and the address. A refusal (a reason code of
        0x80 or more: not authorized, quota exceeded, ...) is a `PublishError` at once."""
        ep = self.endpoint
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ep.operation_timeout
        last = "no connection"
        while True:
            try:
                client = self._client
                if client is None or not self._up.is_set():
                    client = await self.ready(deadline)
                info = client._client.publish(
                    topic, payload, 1, retain, properties
                )  # private: see the module docstring
                if info.rc != 0:
                    raise aiomqtt.MqttCodeError(info.rc, "could not publish")
                acked: asyncio.Future[int] = loop.create_future()
                self._acked[info.mid] = acked
                try:
                    async with asyncio.timeout_at(deadline):
                        code = await acked
                finally:
                    if self._acked.get(info.mid) is acked:
                        del self._acked[info.mid]
                if code >= REFUSED:
                    name = ReasonCode(PacketTypes.PUBACK, identifier=code).getName()
                    raise PublishError(f"mqtt: {what} on {ep.address} refused by the broker: {name} (0x{code:02X})")
                return code
            except TimeoutError:
                raise PublishError(
                    f"mqtt: {what} on {ep.address} timed out after {ep.operation_timeout}s (operation_timeout); {last}"
                ) from None
            except DRIVER_ERRORS as exc:
                if self._closing:
                    raise PublishError(f"mqtt: {what} on {ep.address} failed: the link is closing") from None
                last = describe(exc)
                await asyncio.sleep(0.05)

    def _on_publish(self, client: object, userdata: object, mid: int, rc: object, props: object = None) -> None:
        future = self._acked.pop(mid, None)
        if future is not None and not future.done():
            value = getattr(rc, "value", rc)
            future.set_result(value if isinstance(value, int) else 0)

    def ack(self, generation: int, mid: int) -> bool:
        """Send PUBACK for ``mid`` if it came on the current connection; a delivery of an
        earlier connection is redelivered by the broker instead (returns False)."""
        client = self._client
        if client is None or generation != self.generation or not self._up.is_set():
            return False
        client._client.ack(mid, 1)  # private: see the module docstring
        return True

    async def close(self, *, timeout: float = 2.0) -> None:
        """Disconnect (a normal DISCONNECT: no Will) and stop reconnecting; never raises."""
        self._closing = True
        client = self._client
        self._detach()
        if self._task is not None or self._subscribing:
            await stop_tasks([self._task, *self._subscribing], recancel_after=timeout, give_up_after=timeout * 2)
        if client is not None:
            try:
                async with asyncio.timeout(timeout):
                    await client.__aexit__(None, None, None)
            except DRIVER_ERRORS as exc:
                log.debug("mqtt: disconnect of %s: %s", self.session.client_id, describe(exc))
                _abandon(client)
        for _ in range(3):  # aiomqtt ends its housekeeping task when the socket closes
            await asyncio.sleep(0)


def _watch_session_present(client: aiomqtt.Client) -> Callable[[], bool]:
    """Whether the broker's CONNACK said it resumed the session (paho reports it to
    ``on_connect``; aiomqtt does not pass it on)."""
    paho = client._client  # private: see the module docstring
    chained: Callable[..., None] | None = paho.on_connect
    present = [False]

    def on_connect(*args: Any) -> None:
        flags = args[2] if len(args) > 2 else None
        present[0] = bool(getattr(flags, "session_present", False))
        if chained is not None:
            chained(*args)

    paho.on_connect = on_connect
    return lambda: present[0]


def _watch_errors(client: aiomqtt.Client) -> Callable[[], str]:
    """What paho reported as an error while connecting (aiomqtt ignores a link lost before
    CONNACK and waits out its deadline), e.g. the TLS alert of a server that wants a client
    certificate: ``"; <the last error>"`` or ``""``. Only while connecting: paho formats
    every log line for ``on_log``."""
    seen: list[str] = []

    def on_log(client: object, userdata: object, level: int, text: str) -> None:
        if level == MQTT_LOG_ERR:
            seen.append(text[:300])

    client._client.on_log = on_log  # private: see the module docstring
    return lambda: f"; {seen[-1]}" if seen else ""


def _retrieve(ended: asyncio.Future[None]) -> None:
    """Mark how a connection ended as seen: asyncio logs an exception nobody retrieved."""
    if not ended.cancelled():
        ended.exception()


def _drop(message: MQTTMessage, generation: int) -> None:
    """The sink of a link that consumes nothing."""


def _abandon(client: aiomqtt.Client) -> None:
    """Close the socket of a client given up on (a connect past its deadline, a lost link)."""
    with contextlib.suppress(Exception):
        client._client._sock_close()  # private: see the module docstring


def subscriptions(topics: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(topics))
