"""Credentials on ``nats://``: user/password in the URL, a token (URL or option); a
refused login is a `ConnectError` naming the server, never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats_support import PrivateNats

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, run_strict

pytestmark = [pytest.mark.timeout(120)]


class Hello(Event, name="natsauth.hello"):
    n: int


async def round_trip(url: str) -> None:
    rec = Recorder()
    svc = Service("auth")

    @svc.on
    async def hello(m: Hello) -> None:
        rec.add(m.n)

    async with pycomms.connect(url, services=[svc]) as bus:
        await bus.publish(Hello(n=1))
        await rec.wait(1, 10)


def test_user_and_password(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path, extra=("--user", "alice", "--pass", "wonder-pw"))
    server.start()
    try:
        run_strict(lambda: round_trip(f"nats://alice:wonder-pw@{server.address}?namespace=auth"), 30)

        async def refused() -> None:
            with pytest.raises(pycomms.ConnectError) as caught:
                await pycomms.connect(f"nats://alice:wrong-pw@{server.address}?namespace=auth&connect_timeout=3")
            text = str(caught.value)
            assert text.startswith(f"nats: connect to {server.address} refused: ")
            assert "Authorization Violation" in text
            assert "wrong-pw" not in text
            assert "wonder-pw" not in text

        run_strict(refused, 30)
    finally:
        server.stop()


def test_token_in_the_url_or_as_an_option(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path, extra=("--auth", "t0ken-value"))
    server.start()
    try:
        run_strict(lambda: round_trip(f"nats://t0ken-value@{server.address}?namespace=auth"), 30)
        run_strict(lambda: round_trip(f"nats://{server.address}?namespace=auth&token=t0ken-value"), 30)

        async def refused() -> None:
            with pytest.raises(pycomms.ConnectError) as caught:
                await pycomms.connect(f"nats://{server.address}?namespace=auth&token=bad-t0ken&connect_timeout=3")
            assert "bad-t0ken" not in str(caught.value)

        run_strict(refused, 30)
    finally:
        server.stop()
