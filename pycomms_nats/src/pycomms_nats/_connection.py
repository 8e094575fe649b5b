"""The client connection: servers from the URL, nats-py's connect with our deadlines,
reconnection events for the receivers, and one place that turns driver errors and
expired deadlines into PyComms errors naming the backend, the server and the operation."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import ParseResult, urlsplit

from nats.aio.client import Client
from nats.aio.transport import TcpTransport
from nats.errors import AuthorizationError
from nats.errors import Error as NatsError
from nats.js.errors import Error as JsError

from pycomms import ConfigError, ConnectError, OperationError, PyCommsError
from pycomms.spi import BackendConfig, describe_error, stop_tasks

from ._options import NatsOptions

log = logging.getLogger("pycomms.nats")

T = TypeVar("T")

#: What a driver call may raise besides a PyComms error.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (NatsError, JsError, OSError, ValueError, KeyError)

#: What a bounded background or close step may end with.
STEP_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *DRIVER_ERRORS)

CLOSE_STEP = 1.5
"""Seconds each network step of a close may take (flush, leave presence, disconnect)."""


def parse_servers(config: BackendConfig) -> tuple[list[str], str]:
    """The server URLs for nats-py and ``host:port,...`` to show in messages (no secrets).

    ``nats://user:pass@h1:4222,h2:4222`` names a cluster: the credentials of the first
    server apply to all. A URL path is refused (NATS has none)."""
    _, _, rest = config.url.partition("://")
    netloc, _, _query = rest.partition("?")
    netloc, slash, path = netloc.partition("/")
    if slash and path:
        raise ConfigError(f"nats: URL path {('/' + path)!r} is not used by NATS; remove it (got {config.redacted_url})")
    userinfo, at, hosts = netloc.rpartition("@")
    scheme = "tls" if config.scheme == "tls" else "nats"
    servers: list[str] = []
    shown: list[str] = []
    for host in (hosts or "127.0.0.1:4222").split(","):
        host = host.strip() or "127.0.0.1:4222"
        try:
            port = urlsplit(f"//{host}").port or 4222
            hostname = urlsplit(f"//{host}").hostname or "127.0.0.1"
        except ValueError as exc:
            raise ConfigError(f"nats: server {host!r} in {config.redacted_url}: {exc}; expected host:port") from None
        shown_host = f"[{hostname}]" if ":" in hostname else hostname
        servers.append(f"{scheme}://{userinfo + at if at else ''}{shown_host}:{port}")
        shown.append(f"{shown_host}:{port}")
    return servers, ",".join(shown)


def _tls_context(options: NatsOptions) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.tls_ca_file)
    if options.tls_cert_file:
        context.load_cert_chain(options.tls_cert_file, options.tls_key_file)
    if not options.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Link:
    """One nats-py client and the deadlines of every call made through it."""

    def __init__(self, config: BackendConfig, options: NatsOptions) -> None:
        self._config = config
        self._options = options
        self._servers, self.shown = parse_servers(config)
        self._client: Client | None = None
        self._reconnected: list[Callable[[], None]] = []
        self._js: Any = None
        self._closing = False

    @property
    def client(self) -> Client:
        assert self._client is not None, "the NATS link is not open"
        return self._client

    @property
    def js(self) -> Any:
        """The JetStream context (nats-py's ``JetStreamContext``)."""
        assert self._js is not None, "the NATS link is not open"
        return self._js

    @property
    def api(self) -> str:
        """The JetStream API's subject prefix: ``$JS.API``, or ``$JS.<domain>.API``."""
        domain = self._options.domain
        return f"$JS.{domain}.API" if domain else "$JS.API"

    @property
    def server(self) -> str:
        """The server in use (``host:port``), or all of the URL's before connecting."""
        client = self._client
        url = client.connected_url if client is not None else None
        if url is not None and url.hostname:
            return f"{url.hostname}:{url.port or 4222}"
        return self.shown

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnected.append(callback)

    async def connect(self, name: str) -> None:
        """Connect within ``connect_timeout``; raise `ConnectError` naming the servers."""
        options = self._options
        tls = _tls_context(options) if self._config.scheme == "tls" or options.tls_ca_file else None
        first_error: list[BaseException] = []

        refused = asyncio.Event()

        async def error_cb(exc: Exception) -> None:
            if self._client is None:  # still connecting: the ConnectError will say it
                first_error.append(exc)
                if _refusal(exc):
                    refused.set()  # retrying a refused login or certificate until the deadline helps nobody
                log.debug("nats: connecting to %s: %s", self.shown, describe_error(exc))
                return
            log.warning("nats: connection to %s: %s", self.server, describe_error(exc))

        async def disconnected_cb() -> None:
            if self._closing:
                return
            log.warning("nats: disconnected from %s; reconnecting", self.server)

        async def reconnected_cb() -> None:
            log.warning("nats: reconnected to %s", self.server)
            for callback in self._reconnected:
                callback()

        kwargs: dict[str, Any] = {
            "servers": self._servers,
            "name": name,
            "connect_timeout": options.connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
            "ping_interval": options.ping_interval,
            "max_outstanding_pings": options.max_outstanding_pings,
            "error_cb": error_cb,
            "disconnected_cb": disconnected_cb,
            "reconnected_cb": reconnected_cb,
            "tls": tls,
            "token": options.token,
            "user_credentials": options.user_credentials,
            "nkeys_seed": options.nkeys_seed,
            "dont_randomize": False,
        }
        client = Client()
        client._transport = _ClosingTcpTransport()  # see _ClosingTcpTransport: used for every attempt
        task = asyncio.ensure_future(client.connect(**kwargs))
        refusal = asyncio.ensure_future(refused.wait())
        try:
            done, _ = await asyncio.wait(
                {task, refusal}, timeout=options.connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            await stop_tasks([task, refusal], give_up_after=1.0)
            await _drop_socket(client)
            raise
        await stop_tasks([refusal])
        if task not in done:
            await stop_tasks([task], give_up_after=1.0)
            await _drop_socket(client)
            if refused.is_set():
                raise ConnectError(f"nats: connect to {self.shown} refused: {describe_error(first_error[-1])}")
            reason = f" (last error: {describe_error(first_error[-1])})" if first_error else ""
            raise ConnectError(f"nats: connect to {self.shown} timed out after {options.connect_timeout:g}s{reason}")
        error = task.exception()
        if error is not None:
            await _drop_socket(client)
            if not isinstance(error, DRIVER_ERRORS):
                raise error
            cause = first_error[-1] if first_error else error
            raise ConnectError(f"nats: connect to {self.shown} failed: {describe_error(cause)}") from None
        self._client = client
        self._js = client.jetstream(timeout=options.operation_timeout, domain=options.domain)

    async def call(
        self,
        what: str,
        step: Callable[[], Awaitable[T]],
        *,
        error: type[PyCommsError] = OperationError,
        timeout: float | None = None,
    ) -> T:
        """Run ``step`` within ``operation_timeout`` (or ``timeout``); a driver error or the
        deadline becomes ``error`` naming ``what`` and the server."""
        limit = self._options.operation_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                try:
                    return await step()
                except PyCommsError:
                    raise
                except DRIVER_ERRORS as exc:  # the message is built here only: replies take this path
                    raise error(f"nats: {what} on {self.server} failed: {describe_error(exc)}") from exc
        except TimeoutError:
            raise error(f"nats: {what} on {self.server} timed out after {limit:g}s") from None

    async def close(self) -> None:
        """Disconnect within `CLOSE_STEP` seconds, even from a silent server; never raises."""
        client = self._client
        self._closing = True
        if client is None or client.is_closed:
            return
        task = asyncio.ensure_future(client.close())
        if not await _finished(task, CLOSE_STEP):
            log.warning("nats: disconnecting from %s took over %.1fs; the socket is dropped", self.server, CLOSE_STEP)
            await stop_tasks([task], give_up_after=1.0)
        await _abandon(client)  # also after a close that failed half-way (a reset link): nothing left running


class _ClosingTcpTransport(TcpTransport):
    """nats-py's TCP transport, which aborts the sockets of earlier attempts when it
    connects again. nats-py keeps one transport object for every reconnect attempt and
    overwrites its streams (two reconnect loops can even race on it): an attempt that
    reached TCP and then failed (a silent server, a link cut at once) would otherwise
    leave its socket open, one per attempt."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # nats-py's is untyped
        self._opened: list[asyncio.StreamWriter] = []

    async def connect(self, uri: ParseResult, buffer_size: int, connect_timeout: int) -> None:
        self.abort()
        await super().connect(uri, buffer_size, connect_timeout)
        if self._bare_io_writer is not None:
            self._opened.append(self._bare_io_writer)

    def __bool__(self) -> bool:
        # nats-py replaces a transport that is falsy (TcpTransport's is until its first
        # connect) with a plain TcpTransport of its own: this one must be kept.
        return True

    def abort(self) -> None:
        """Abort every socket this transport opened (the current one too)."""
        writers = [*self._opened, self._io_writer, self._bare_io_writer]
        self._opened = []
        for writer in writers:
            if writer is not None and not writer.transport.is_closing():
                writer.transport.abort()


async def _abandon(client: Client) -> None:
    """End what nats-py's close may not have: it flushes into the socket before it stops
    its tasks, so a silent link holds it and a reset link ends it with an error half-way,
    leaving its background and subscription tasks and the socket. Harmless after a
    complete close."""
    tasks = [
        getattr(client, name, None)
        for name in ("_reading_task", "_ping_interval_task", "_flusher_task", "_reconnection_task")
    ]
    tasks += [getattr(sub, "_wait_for_msgs_task", None) for sub in list(getattr(client, "_subs", {}).values())]
    await stop_tasks([t for t in tasks if isinstance(t, asyncio.Task)], give_up_after=1.0)
    transport = getattr(client, "_transport", None)
    if isinstance(transport, _ClosingTcpTransport):
        transport.abort()


def _refusal(exc: BaseException) -> bool:
    """Whether a connect error will not go away by retrying: a refused login, a
    certificate that does not verify."""
    return (
        isinstance(exc, AuthorizationError | ssl.SSLCertVerificationError)
        or "authorization violation" in str(exc).lower()
    )


async def _drop_socket(client: Client) -> None:
    """Close the socket of a client whose connect or close was abandoned (nats-py
    leaves it open when its task is cancelled)."""
    transport = getattr(client, "_transport", None)
    if transport is None:
        return
    if isinstance(transport, _ClosingTcpTransport):
        transport.abort()  # every socket of every attempt
    try:
        transport.close()
        async with asyncio.timeout(1.0):
            await transport.wait_closed()
    except STEP_ERRORS as exc:
        log.debug("nats: closing an abandoned socket: %s", describe_error(exc))
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        # a failed TLS handshake leaves the stream's closing future cancelled: it is closed


async def _finished(task: asyncio.Future[Any], limit: float) -> bool:
    done, _ = await asyncio.wait([task], timeout=limit)
    if task in done and not task.cancelled() and task.exception() is not None:
        log.debug("nats: close ended with %s", describe_error(task.exception()))  # type: ignore[arg-type]
    return task in done
