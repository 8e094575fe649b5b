"""``tls://`` on a private nats-server with a certificate signed by a test CA made here:
verified with ``tls_ca_file``; refused without it (an unknown authority), the error
naming the server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats_support import PrivateNats

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, run_strict, unavailable

pytestmark = [pytest.mark.timeout(120)]


class Hello(Event, name="natstls.hello"):
    n: int


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[PrivateNats, Path]]:
    openssl = shutil.which("openssl")
    if openssl is None:
        unavailable("openssl is needed to make the test certificates")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=tmp_path, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=pycomms-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (tmp_path / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf")  # fmt: skip
    server = PrivateNats(
        tmp_path,
        extra=("--tls", "--tlscert", str(tmp_path / "server.crt"), "--tlskey", str(tmp_path / "server.key")),
    )
    server.start()
    try:
        yield server, tmp_path / "ca.crt"
    finally:
        server.stop()


def test_tls_round_trip_with_a_verified_certificate(tls_nats: tuple[PrivateNats, Path]) -> None:
    server, ca = tls_nats

    async def scenario() -> None:
        rec = Recorder()
        svc = Service("secure")

        @svc.on
        async def hello(m: Hello) -> None:
            rec.add(m.n)

        async with pycomms.connect(f"tls://{server.address}?namespace=tls&tls_ca_file={ca}", services=[svc]) as bus:
            await bus.publish(Hello(n=1))
            await rec.wait(1, 10)

    run_strict(scenario, 60)


def test_tls_refuses_an_unknown_authority(tls_nats: tuple[PrivateNats, Path]) -> None:
    server, _ = tls_nats

    async def scenario() -> None:
        with pytest.raises(pycomms.ConnectError, match=rf"nats: connect to {server.address} .*CERTIFICATE_VERIFY"):
            await pycomms.connect(f"tls://{server.address}?namespace=tls&connect_timeout=3")

    run_strict(scenario, 60)
