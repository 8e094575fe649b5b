"""`Pump` watches the socket paho opened only if it is still open when the loop gets to it.

paho reports the socket opened on the thread that connects. When that socket is closed
before the loop runs (a link cut during the handshake, a connect given up on), aiomqtt's
own callbacks handed its number to epoll anyway: "Exception in callback
BaseSelectorEventLoop.add_writer(26, ...): OSError(9, 'Bad file descriptor')" in the
fault matrix's ``mqtt link_closed`` cell (CI, 2026-12-07), or, had the number been taken
by a new socket meanwhile, a reader put on that other socket. Real sockets, no broker."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import aiomqtt
from pycomms_mqtt._paho_io import Pump

from pycomms.testing import run_strict

PINGREQ = b"\xc0\x00"


def _open_on_a_thread(paho: Any, opened: socket.socket, then: Callable[[], object]) -> None:
    """What paho's connect does on aiomqtt's executor thread: take ``opened``, report it
    opened, then ``then``. The loop is held until the thread ends, so it runs what the
    thread queued only afterwards."""

    def connecting() -> None:
        paho._sock = opened
        paho._call_socket_open(opened)
        then()

    thread = threading.Thread(target=connecting)
    thread.start()
    thread.join()


def test_a_socket_closed_before_the_loop_watches_it_is_left_alone() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        problems: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: problems.append(context))
        client = aiomqtt.Client("127.0.0.1", 1)  # never connected: paho's socket is set by hand
        Pump(client, loop)
        paho: Any = client._client
        opened, peer = socket.socketpair()
        number = opened.fileno()

        def fail() -> None:  # queue CONNECT, then lose the link
            paho._call_socket_register_write()
            paho._sock_close()

        _open_on_a_thread(paho, opened, fail)
        reused, other = socket.socketpair()  # likely to get the closed socket's number
        try:
            for _ in range(5):
                await asyncio.sleep(0)
            assert problems == []
            assert not loop.remove_reader(number), "a reader was put on a closed socket's number"
            assert not loop.remove_writer(number), "a writer was put on a closed socket's number"
            assert client._misc_task is None
        finally:
            for sock in (peer, reused, other):
                sock.close()

    run_strict(scenario, 10)


def test_an_open_socket_is_read_and_written_on_the_loop() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        client = aiomqtt.Client("127.0.0.1", 1)
        Pump(client, loop)
        paho: Any = client._client
        opened, peer = socket.socketpair()
        opened.setblocking(False)
        peer.setblocking(False)
        try:
            _open_on_a_thread(paho, opened, lambda: paho._packet_queue(0xC0, PINGREQ, 0, 0))  # as CONNECT is
            assert await asyncio.wait_for(loop.sock_recv(peer, 16), 5) == PINGREQ
            assert client._misc_task is not None
            assert not client._misc_task.done()
            assert loop.remove_reader(opened.fileno()), "the open socket is not read"
            loop.add_reader(opened.fileno(), lambda: None)  # put back, for the close below
            paho._sock_close()  # on the loop: stops watching before the close
            await asyncio.sleep(0)
            assert client._misc_task.done()
        finally:
            peer.close()

    run_strict(scenario, 10)


def test_a_socket_opened_after_the_connect_was_given_up_on_is_closed() -> None:
    """The connecting thread cannot be stopped: a connection it completes after the
    link's deadline must not go live (it would CONNECT with the link's client id)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        client = aiomqtt.Client("127.0.0.1", 1)
        pump = Pump(client, loop)
        paho: Any = client._client
        opened, peer = socket.socketpair()
        number = opened.fileno()
        pump.abandon()  # the deadline passed while the thread was still connecting
        _open_on_a_thread(paho, opened, lambda: paho._packet_queue(0xC0, PINGREQ, 0, 0))
        peer.setblocking(False)
        try:
            assert await asyncio.wait_for(loop.sock_recv(peer, 16), 5) == b"", "the connection went live"
            assert opened.fileno() == -1
            assert paho.socket() is None
            assert not loop.remove_reader(number)
            assert client._misc_task is None
        finally:
            peer.close()

    run_strict(scenario, 10)
