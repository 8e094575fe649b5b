"""How a link moves packets through paho underneath aiomqtt, on the hot path.

aiomqtt hands each outgoing paho packet to the event loop with ``call_soon_threadsafe``
(a write to the loop's self-pipe) and an ``add_writer``/``remove_writer`` pair, so every
packet costs two epoll changes and a ``send`` of its own; and each incoming message goes
through an ``asyncio.Queue`` read by a task made for that one message. At a few thousand
messages a second that was most of what PyComms spent over the broker. Here, from the
moment paho opens the socket (`Pump` reads and writes it in aiomqtt's place):

- what paho queued during one loop iteration leaves in one ``send`` (`Pump`): runs of
  QoS 1 PUBLISH and PUBACK packets, after whose writing paho does nothing, are joined; a
  full socket buffer arms a writer until it drains;
- incoming messages go from paho's ``on_message`` straight to the link (`Inbox`), held
  back until the link has attached the connection, as aiomqtt's queue held them;
- the socket has ``TCP_NODELAY``: a PUBACK must not wait for Nagle behind the previous one;
- it is read with ``TCP_QUICKACK`` set again at each wake-up (Linux): Mosquitto leaves
  Nagle on for its side by default (``set_tcp_nodelay false``), so its next small packet
  to us (a reply right after a PUBACK) waits until we ACK the previous one, and a delayed
  ACK made that ~40 ms: a request/reply round trip took 44 ms at p50 instead of ~1 ms.

Everything else (connect, subscribe, disconnect, errors) stays aiomqtt's; its
housekeeping task (paho's keepalive) is started and ended here, with the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTTMessage
from paho.mqtt.enums import MQTTErrorCode

PUBLISH = 0x30
PUBACK = 0x40
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def joinable(packet: dict[str, Any]) -> bool:
    """A packet paho does nothing with once written, and not begun yet."""
    kind: int = packet["command"] & 0xF0
    return packet["pos"] == 0 and (kind == PUBACK or (kind == PUBLISH and packet["qos"] > 0))


def coalesce(queue: deque[Any]) -> None:
    """Join runs of `joinable` packets of paho's outgoing queue into one packet each."""
    if len(queue) < 2:
        return
    out: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []

    def end_run() -> None:
        if len(run) > 1:
            data = b"".join(packet["packet"] for packet in run)
            out.append(
                {"command": PUBACK, "mid": 0, "qos": 1, "pos": 0, "to_process": len(data), "packet": data, "info": None}
            )
        else:
            out.extend(run)
        run.clear()

    for packet in queue:
        if joinable(packet):
            run.append(packet)
        else:
            end_run()
            out.append(packet)
    end_run()
    queue.clear()
    queue.extend(out)


class Pump:
    """Moves a paho client's packets between its socket and the loop, from the connect on,
    in aiomqtt's place (see the module docstring); made before the client connects.

    paho reports its socket opened on the thread that connects (aiomqtt's executor), and
    aiomqtt handed the descriptor's number to the loop (``add_reader``/``add_writer``) from
    there. A socket closed before the loop ran those (a link cut during the handshake, a
    connect given up on) made epoll refuse the number (EBADF, logged by asyncio as an
    exception in a callback), or the number was already another socket's, whose reader or
    writer was then replaced. Here the loop checks the socket object itself first."""

    def __init__(self, client: aiomqtt.Client, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._paho = paho = client._client  # private: see _link.py's docstring
        self._loop = loop
        self._thread = threading.get_ident()
        self._scheduled = False
        self._armed: int | None = None
        self._reading: int | None = None
        self._sock: socket.socket | None = None
        self._abandoned = False
        paho.on_socket_open = self._opened
        paho.on_socket_close = self._closing
        paho.on_socket_register_write = self._want_write
        paho.on_socket_unregister_write = self._wrote

    def abandon(self) -> None:
        """The connect was given up on (its deadline, a cancellation): close the socket,
        and the one the connecting thread, which cannot be stopped, may still open. Else
        that connection would go live, CONNECT with the link's client id and take over the
        session of the link's next attempt."""
        self._abandoned = True
        with contextlib.suppress(Exception):
            self._paho._sock_close()  # private: see _link.py's docstring

    def _opened(self, client: object, userdata: object, opened: object) -> None:
        self._loop.call_soon_threadsafe(self._watch, opened)

    def _watch(self, opened: object) -> None:
        """Read the socket paho opened on the loop (and ping the broker), unless it was
        closed meanwhile."""
        sock = self._paho.socket()
        if sock is None or sock is not opened or sock.fileno() < 0:
            return
        if self._abandoned:
            self.abandon()
            return
        if isinstance(sock, socket.socket):  # an ssl.SSLSocket is one too
            self._sock = sock
            with contextlib.suppress(OSError, ValueError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reading = sock.fileno()
        self._loop.add_reader(self._reading, self._readable)
        client = self._client
        client._misc_task = self._loop.create_task(client._misc_loop())  # private: paho's keepalive, as aiomqtt runs it
        if self._paho.want_write():
            self._arm()

    def _closing(self, client: object, userdata: object, sock: object) -> None:
        """paho is about to close its socket: stop watching it. From another thread (paho
        does so only while connecting, before `_watch` ran) this is queued before the
        close, so it runs before a socket the loop opens can get the number."""
        if threading.get_ident() == self._thread:
            self._unwatch()
        else:
            self._loop.call_soon_threadsafe(self._unwatch)

    def _unwatch(self) -> None:
        self._disarm()
        if self._reading is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._reading)
            self._reading = None
        self._sock = None
        task = self._client._misc_task  # private: see _watch
        if task is not None and not task.done():
            task.cancel()

    def _readable(self) -> None:
        """What aiomqtt's reader did (read until paho and the TLS layer hold nothing more), with the
        socket put back into quick-ACK mode first (see the module docstring)."""
        sock, paho = self._sock, self._paho
        try:
            if QUICKACK is not None and sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
            while True:
                paho.loop_read()
                pending = getattr(paho._sock, "pending", None)  # private: see _link.py's docstring
                if pending is None or pending() <= 0:
                    break
        except Exception as exc:  # what aiomqtt's reader does: the connection is broken
            self._broken(exc)

    def _want_write(self, client: object, userdata: object, sock: object) -> None:
        if threading.get_ident() == self._thread:
            self._schedule()
        else:  # connecting: written once writable, after what the socket has to read (as
            # aiomqtt did), so a server's TLS alert (e.g. "certificate required") is read
            # before CONNECT goes out to a closed connection, whose RST would discard it
            self._loop.call_soon_threadsafe(self._arm)

    def _wrote(self, client: object, userdata: object, sock: object) -> None:
        if threading.get_ident() == self._thread:
            self._disarm()
        else:
            self._loop.call_soon_threadsafe(self._disarm)

    def _schedule(self) -> None:
        if not self._scheduled and self._armed is None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        paho = self._paho
        try:
            coalesce(paho._out_packet)  # private: see _link.py's docstring
            rc = paho.loop_write()
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and paho.want_write():
                self._arm()
        except Exception as exc:  # what aiomqtt's writer does: the connection is broken
            self._disarm()
            self._broken(exc)

    def _broken(self, exc: Exception) -> None:
        disconnected: asyncio.Future[None] = self._client._disconnected  # private: see _link.py's docstring
        if not disconnected.done():
            disconnected.set_exception(exc)

    def _arm(self) -> None:
        sock = self._paho.socket()
        if sock is not None and self._armed is None:
            number = sock.fileno()
            self._loop.add_writer(number, self._writable)
            self._armed = number

    def _writable(self) -> None:
        self._disarm()
        self._flush()

    def _disarm(self) -> None:
        if self._armed is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(self._armed)
            self._armed = None


class Inbox:
    """paho's ``on_message`` for a link: each message to ``sink`` with the generation of
    its connection, the ones that came before the link attached it held until then."""

    def __init__(self, sink: Callable[[MQTTMessage, int], None], generation: int) -> None:
        self._sink = sink
        self.generation = generation
        self._held: list[MQTTMessage] | None = []

    def on_message(self, client: object, userdata: object, message: MQTTMessage) -> None:
        held = self._held
        if held is not None:
            held.append(message)
        else:
            self._sink(message, self.generation)

    def open(self) -> None:
        """The link attached this connection: pass on what was held, then everything."""
        held, self._held = self._held or [], None
        for message in held:
            self._sink(message, self.generation)
