"""``mqtts://`` on a private Mosquitto with a TLS listener whose certificate a test CA made
here signed: an event handled and a request answered with ``tls_ca_file``; refused with
another CA (``ConnectError`` naming the address and the verification failure); and a
listener that requires a client certificate (``require_certificate true``): accepted with
``tls_cert_file``/``tls_key_file`` signed by the CA, refused without."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mqtt_support import MOSQUITTO, PrivateMosquitto

import pycomms
from pycomms import ConnectError, Event, Message, Request, Service
from pycomms.testing import Recorder, run_strict, unavailable

pytestmark = [pytest.mark.timeout(120)]


class Hello(Event, name="mqtttls.hello"):
    n: int


class Echoed(Message, name="mqtttls.echoed"):
    text: str


class Echo(Request[Echoed], name="mqtttls.echo"):
    text: str


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and
    a second CA that signed nothing of this."""

    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _make_pki(directory: Path) -> Pki:
    openssl = shutil.which("openssl")
    if openssl is None:
        unavailable("openssl is needed to make the test certificates")
    if not os.path.exists(MOSQUITTO):
        unavailable(f"mosquitto not found at {MOSQUITTO}")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
            "-days", "1", "-subj", f"/CN=pycomms-test-{ca}")  # fmt: skip
    (directory / "server.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    (directory / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject in (("server", "/CN=localhost"), ("client", "/CN=pycomms-device-7")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.cnf")  # fmt: skip
    return Pki(
        ca=directory / "ca.crt",
        other_ca=directory / "other-ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


def _tls_broker(directory: Path, pki: Pki, *, require_certificate: bool) -> PrivateMosquitto:
    return PrivateMosquitto(
        directory,
        listener_options=(
            f"cafile {pki.ca}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
            f"require_certificate {str(require_certificate).lower()}",
        ),
    )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return _make_pki(tmp_path)


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[PrivateMosquitto]:
    broker = _tls_broker(tmp_path, pki, require_certificate=False)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mutual_tls_broker(tmp_path: Path, pki: Pki) -> Iterator[PrivateMosquitto]:
    broker = _tls_broker(tmp_path, pki, require_certificate=True)
    broker.start()
    yield broker
    broker.stop()


async def _round_trip(url: str) -> None:
    """An event handled and a request answered over ``url``."""
    handled = Recorder()
    service = Service("secure")

    @service.on
    async def hello(event: Hello) -> None:
        handled.add(event.n)

    @service.on
    async def echo(request: Echo) -> Echoed:
        return Echoed(text=request.text)

    async with pycomms.connect(url, services=[service]) as server, pycomms.connect(url) as client:
        del server
        await client.publish(Hello(n=1))
        await handled.wait(1, 10)
        assert (await client.request(Echo(text="over tls"), timeout=10)).text == "over tls"
    handled.assert_exactly_once([1])


def test_mqtts_round_trip_with_a_verified_server(tls_broker: PrivateMosquitto, pki: Pki) -> None:
    url = f"mqtts://127.0.0.1:{tls_broker.port}?namespace=tls&tls_ca_file={pki.ca}"
    run_strict(lambda: _round_trip(url), 60)


def test_mqtts_refuses_a_server_another_ca_signed(tls_broker: PrivateMosquitto, pki: Pki) -> None:
    async def scenario() -> None:
        url = f"mqtts://127.0.0.1:{tls_broker.port}?namespace=tls&connect_timeout=3&tls_ca_file={pki.other_ca}"
        with pytest.raises(ConnectError) as info:
            await pycomms.connect(url)
        text = str(info.value)
        assert f"mqtt: connect to 127.0.0.1:{tls_broker.port} failed" in text
        assert "certificate verify failed" in text.lower(), text

    run_strict(scenario, 60)


def test_mqtts_client_certificate(mutual_tls_broker: PrivateMosquitto, pki: Pki) -> None:
    """``require_certificate true``: in with the CA's client certificate, refused without."""
    base = f"mqtts://127.0.0.1:{mutual_tls_broker.port}?namespace=mtls&connect_timeout=3&tls_ca_file={pki.ca}"
    run_strict(lambda: _round_trip(f"{base}&tls_cert_file={pki.client_cert}&tls_key_file={pki.client_key}"), 60)

    async def without_certificate() -> None:
        with pytest.raises(ConnectError) as info:
            await pycomms.connect(base)
        text = str(info.value)
        assert f"mqtt: connect to 127.0.0.1:{mutual_tls_broker.port}" in text
        assert "certificate required" in text.lower(), text  # the server's TLS alert, not just a timeout

    run_strict(without_certificate, 60)
