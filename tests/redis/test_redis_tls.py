"""``rediss://`` against a private TLS-only redis-server with a throw-away CA."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_proxy import free_port
from redis_support import PrivateRedis, new_namespace

import pycomms
from pycomms import ConnectError, Event, Service
from pycomms.testing import Recorder, run_strict, unavailable


class Hello(Event, name="tls.hello"):
    n: int


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
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
    tls_port = free_port()
    server = PrivateRedis(
        appendonly=True,
        extra_args=(
            "--tls-port", str(tls_port), "--tls-cert-file", str(tmp_path / "server.crt"),
            "--tls-key-file", str(tmp_path / "server.key"), "--tls-ca-cert-file", str(tmp_path / "ca.crt"),
            "--tls-auth-clients", "no",
        ),
    )  # fmt: skip
    server.start()
    try:
        yield tls_port, tmp_path / "ca.crt"
    finally:
        server.stop()


def test_rediss_round_trip_with_verified_certificate(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    url = f"rediss://localhost:{port}/0?namespace={new_namespace()}&tls_ca_file={ca}"

    async def scenario() -> None:
        rec = Recorder()
        svc = Service("tls")

        @svc.on
        async def handle(hello: Hello) -> None:
            rec.add(hello.n)

        async with pycomms.connect(url, services=[svc]) as bus:
            await bus.publish(Hello(n=1))
            await rec.wait(1, 10)
        rec.assert_exactly_once([1])

    run_strict(scenario, 30)


def test_rediss_refuses_an_unknown_certificate_authority(tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis

    async def scenario() -> None:
        with pytest.raises(ConnectError):
            await pycomms.connect(f"rediss://localhost:{port}/0?namespace={new_namespace()}")
        async with pycomms.connect(f"rediss://localhost:{port}/0?namespace={new_namespace()}&tls_verify=false"):
            pass

    run_strict(scenario, 30)
