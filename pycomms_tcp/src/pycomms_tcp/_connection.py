"""One peer link: an asyncio protocol that frames bytes, runs the handshake, and
reports what happens on it to its owner through `LinkEvents` (the way asyncio hands a
`Protocol` its ``data_received``/``connection_lost``).

The first frame sent in a turn of the event loop is written at once (a request or a
reply is not held back); the frames after it in the same turn, and every ACK of the
turn, are written together at its end (one ``write``), which keeps small acks and
deliveries cheap under load.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._frames import Frame, FrameDecoder, ProtocolError, ack_frame, json_frame, parse_json
from ._handshake import PROTOCOL_VERSION, Hello, new_nonce, parse_hello, proof, verify

log = logging.getLogger("pycomms.tcp")

PREAUTH_MAX_FRAME = 64 * 1024
"""Frame limit until the handshake is done, so an unauthenticated peer cannot make us buffer much."""

FRAME_OVERHEAD = 64 * 1024
"""Room for frame headers and the service name on top of ``max_message_size``."""


SELF_LINK = "connected to itself"
"""The refusal a node gets when it dialled its own address (a seed list naming every node)."""


class Link(enum.Enum):
    """A link's life: ``NEW -> HELLO`` (HELLO exchange) ``-> AUTH`` (listener waits for
    the dialer's proof) ``-> STATE`` (this side sent its STATE) ``-> OPEN -> CLOSED``."""

    NEW = "new"
    HELLO = "hello"
    AUTH = "auth"
    STATE = "state"
    OPEN = "open"
    CLOSED = "closed"

    @property
    def announced(self) -> bool:
        """This side's STATE went out: later updates (SUBSCRIBE, ...) may follow it."""
        return self in (Link.STATE, Link.OPEN)


class HandshakeError(Exception):
    """The other side refused us, or we refused it (reason in ``args[0]``)."""


@dataclass(slots=True)
class LinkSettings:
    """Who this node is on its links, and their limits (``node_id`` is set when the
    transport opens)."""

    namespace: str
    secret: str | None
    max_frame: int
    handshake_timeout: float
    node_id: str = ""


class LinkEvents(Protocol):
    """What a `Connection` reports to its owner. Called on the event loop; a method
    that raises `ProtocolError` closes the link."""

    def link_made(self, conn: Connection) -> bool:
        """A TCP link was made (before the handshake); False closes it at once."""

    def link_state(self) -> dict[str, Any]:
        """This node's STATE body, sent once the other side is authenticated."""

    def link_open(self, conn: Connection, state: dict[str, Any]) -> None:
        """The handshake is done; ``state`` is the other side's STATE body."""

    @property
    def frame_handlers(self) -> Mapping[int, FrameHandler]:
        """What to call for each kind of frame that arrives on an open link (a kind
        not in it is a protocol error)."""

    def link_paused(self, conn: Connection, paused: bool) -> None:
        """The kernel buffer toward the peer filled (``paused``) or has room again."""

    def link_lost(self, conn: Connection) -> None:
        """The link is closed (for whatever reason); nothing more is sent on it."""


FrameHandler = Callable[["Connection", bytes], None]


class Connection(asyncio.Protocol):
    """A TCP link to one peer. ``dialer`` is True on the side that connected."""

    def __init__(self, events: LinkEvents, settings: LinkSettings, *, dialer: bool) -> None:
        loop = asyncio.get_running_loop()
        self.events = events
        self.settings = settings
        self._handlers = events.frame_handlers
        self.dialer = dialer
        self.transport: asyncio.Transport | None = None
        self.remote = "?"
        self.decoder = FrameDecoder(PREAUTH_MAX_FRAME)
        self.state = Link.NEW
        self.peer_id = ""
        self.flights: set[int] = set()
        self.last_rx = self.last_tx = loop.time()
        self.partial_since: float | None = None
        self.opened_at = loop.time()
        self.established: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._nonce = new_nonce()
        self._their: Hello | None = None
        self._out: list[bytes] = []
        self._acks: list[int] = []
        self._flush_pending = False
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._loop = loop
        # asyncio's own loop reads time.monotonic(): called directly, a Python frame less per
        # frame received and sent; any other loop (uvloop) keeps its own clock
        self._clock: Callable[[], float] = (
            time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        )

    def __repr__(self) -> str:
        return f"<Connection {self.remote} peer={self.peer_id or '?'} {self.state.value}>"

    # asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peername = transport.get_extra_info("peername")
        self.remote = f"{peername[0]}:{peername[1]}" if peername else "?"
        if not self.events.link_made(self):
            transport.abort()
            return
        self.state = Link.HELLO
        self._deadline = self._loop.call_later(self.settings.handshake_timeout, self._handshake_expired)
        if self.dialer:
            self._write_now(json_frame(Frame.HELLO, self._hello("")))

    def data_received(self, data: bytes) -> None:
        now = self._clock()
        self.last_rx = now
        frames: list[tuple[int, bytes]] = []
        decoder = self.decoder
        try:
            frames = decoder.feed(data)
            for kind, payload in frames:
                if self.state is Link.OPEN:
                    handler = self._handlers.get(kind)
                    if handler is None:
                        raise ProtocolError(f"frame type {kind} is not allowed after the handshake")
                    handler(self, payload)
                elif self.state is Link.CLOSED:
                    return
                else:
                    self._handshake(kind, payload)
        except ProtocolError as exc:
            log.warning("closing the link to %s: protocol error: %s", self.remote, exc)
            self.abort()
            return
        except HandshakeError as exc:
            self.refuse(str(exc))
            return
        except Exception:
            # a local failure (e.g. the spool's disk) must not kill the event loop's reader
            log.exception("internal error while handling a frame from %s; closing the link", self.remote)
            self.abort()
            return
        if not decoder.partial:
            self.partial_since = None
        elif frames or self.partial_since is None:
            self.partial_since = now  # a new frame began: its own deadline (busy links end most reads mid-frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = Link.CLOSED
        if self._deadline is not None:
            self._deadline.cancel()
        self._out.clear()
        self._acks.clear()
        if not self.established.done():
            self.established.set_exception(ConnectionError(f"link to {self.remote} closed during the handshake"))
            self.established.exception()  # retrieved: a failed dial is reported by the dialer
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self.events.link_lost(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True
        self.events.link_paused(self, True)

    def resume_writing(self) -> None:
        self._paused = False
        self.events.link_paused(self, False)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    # writing -----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send one encoded frame: at once if it is the first of this loop turn, else
        with the others of the turn at its end."""
        if self.state is Link.CLOSED:
            return
        if self._flush_pending:
            self._out.append(data)
            return
        self._flush_pending = True  # nothing is queued: writing now keeps the order
        self._loop.call_soon(self._flush)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            self.last_tx = self._clock()

    def send_later(self, data: bytes) -> None:
        """Send one encoded frame with the others of this loop turn, at its end or when
        the receivers go idle (`TcpTransport.flush`), whichever comes first: a reply,
        which the ACK of its request follows, so that one write carries both."""
        if self.state is Link.CLOSED:
            return
        self._out.append(data)
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def ack(self, seq: int) -> None:
        """Queue the ACK of one delivery; the ACKs of one loop turn go out as one frame."""
        if self.state is Link.CLOSED:
            return
        self._acks.append(seq)
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self._acks:
            self._out.append(ack_frame(self._acks))
            self._acks = []
        transport = self.transport
        if self._out and transport is not None and self.state is not Link.CLOSED and not transport.is_closing():
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out.clear()
            transport.write(data)
            self.last_tx = self._clock()

    def flush(self) -> None:
        """Write queued frames now, if any."""
        if self._out or self._acks:
            self._flush()

    def _write_now(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.last_tx = self._clock()

    @property
    def writable(self) -> bool:
        return self.state is Link.OPEN

    @property
    def paused(self) -> bool:
        """The kernel buffer toward this peer is full: writers should `drain`."""
        return self._paused

    async def drain(self) -> None:
        """Wait while the kernel buffer toward this peer is full."""
        if self._paused and self.state is not Link.CLOSED:
            if self._drain is None or self._drain.done():
                self._drain = self._loop.create_future()
            await asyncio.shield(self._drain)

    @property
    def closing(self) -> bool:
        """Closed, or being closed."""
        return self.state is Link.CLOSED or self.transport is None or self.transport.is_closing()

    def _handshake_expired(self) -> None:
        if self.state is not Link.OPEN and not self.closing:
            log.info(
                "%s did not finish the handshake in %ss (connect_timeout); closing the link",
                self.remote,
                self.settings.handshake_timeout,
            )
            self.abort()

    def abort(self) -> None:
        if self.transport is not None and self.state is not Link.CLOSED:
            self.transport.abort()

    def close(self) -> None:
        """Flush and close gracefully."""
        self._flush()
        if self.transport is not None and self.state is not Link.CLOSED:
            self.transport.close()

    def refuse(self, reason: str) -> None:
        """Tell the other side why, then close (handshake failures)."""
        log.warning("refusing the link with %s: %s", self.remote, reason)
        if not self.established.done():
            self.established.set_exception(HandshakeError(reason))
            self.established.exception()
        self._write_now(json_frame(Frame.ERROR, {"error": reason}))
        if self.transport is not None:
            self.transport.close()
        self.state = Link.CLOSED

    # handshake ---------------------------------------------------------------------

    def _hello(self, mac: str) -> dict[str, Any]:
        me = self.settings
        return Hello(PROTOCOL_VERSION, me.namespace, me.node_id, self._nonce, mac).to_json()

    def _pair(self) -> tuple[tuple[str, str], tuple[str, str]]:
        assert self._their is not None
        mine = (self.settings.node_id, self._nonce)
        theirs = (self._their.id, self._their.nonce)
        return (mine, theirs) if self.dialer else (theirs, mine)

    def _check_hello(self, payload: bytes) -> Hello:
        hello = parse_hello(parse_json(payload))
        if hello.proto != PROTOCOL_VERSION:
            raise HandshakeError(
                f"protocol version {hello.proto} is not supported (this side speaks {PROTOCOL_VERSION}:"
                " CloudEvents envelopes, PyComms wire 2); upgrade the older node"
            )
        if hello.namespace != self.settings.namespace:
            raise HandshakeError(f"namespace mismatch: {hello.namespace!r} != {self.settings.namespace!r}")
        if hello.id == self.settings.node_id:
            raise HandshakeError(SELF_LINK)
        return hello

    def _handshake(self, kind: int, payload: bytes) -> None:
        me = self.settings
        if kind == Frame.ERROR:
            reason = str(parse_json(payload).get("error", "?"))[:200]
            log.warning("%s refused the link: %s", self.remote, reason)
            if not self.established.done():
                self.established.set_exception(HandshakeError(reason))
                self.established.exception()
            self.abort()
            return
        if self.state is Link.HELLO and kind == Frame.HELLO:
            self._their = hello = self._check_hello(payload)
            self.peer_id = hello.id
            dialer, listener = self._pair()
            if self.dialer:
                expected = proof(me.secret, "listener", me.namespace, dialer, listener)
                if me.secret is None and hello.mac:
                    raise HandshakeError("the peer requires a secret and this node has none")
                if not verify(expected, hello.mac):
                    raise HandshakeError("authentication failed (wrong secret)")
                self.decoder.max_frame = me.max_frame
                mac = proof(me.secret, "dialer", me.namespace, dialer, listener)
                self._write_now(json_frame(Frame.AUTH, {"mac": mac}))
                self._write_now(json_frame(Frame.STATE, self.events.link_state()))
                self.state = Link.STATE
            else:
                mac = proof(me.secret, "listener", me.namespace, dialer, listener)
                self._write_now(json_frame(Frame.HELLO, self._hello(mac)))
                self.state = Link.AUTH
            return
        if self.state is Link.AUTH and kind == Frame.AUTH and not self.dialer:
            dialer, listener = self._pair()
            mac = parse_json(payload).get("mac", "")
            expected = proof(me.secret, "dialer", me.namespace, dialer, listener)
            if not isinstance(mac, str) or not verify(expected, mac):
                raise HandshakeError("authentication failed (wrong secret)")
            self.decoder.max_frame = me.max_frame
            self._write_now(json_frame(Frame.STATE, self.events.link_state()))
            self.state = Link.STATE
            return
        if self.state is Link.STATE and kind == Frame.STATE:
            self.state = Link.OPEN
            if self._deadline is not None:
                self._deadline.cancel()
            self.events.link_open(self, parse_json(payload))
            if not self.established.done():
                self.established.set_result(None)
            return
        raise ProtocolError(f"unexpected frame {kind} during the handshake (state {self.state.value})")
