"""TLS links: nodes with certificates of one CA talk; a certificate from another CA,
or no TLS at all, is refused."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tcp_helpers import free_port, scale
from tcp_worker import Ask, Echo

import pycomms
from pycomms import Service
from pycomms.testing import run_strict, unavailable

pytestmark = [
    pytest.mark.filterwarnings("error"),
    pytest.mark.timeout(60),
]


def openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        unavailable("needs the openssl command to make certificates")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(where: Path, name: str) -> dict[str, str]:
    """A CA and one node certificate it signed: ``tls_*`` options."""
    where.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", f"/CN={name}-ca", cwd=where
    )
    openssl("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", f"/CN={name}-node", cwd=where)
    openssl(
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "1",
        cwd=where,
    )
    return {"tls_cert": str(where / "node.pem"), "tls_key": str(where / "node.key"), "tls_ca": str(where / "ca.pem")}


def test_mutual_tls(namespace: str, tmp_path: Path) -> None:
    good = make_pki(tmp_path / "good", "good")
    other = make_pki(tmp_path / "other", "other")
    port = free_port()
    svc = Service("echo")

    @svc.on
    async def ask(msg: Ask) -> Echo:
        return Echo(n=msg.n, pid=0)

    async def scenario() -> None:
        server_url = f"tcp://127.0.0.1:{port}?namespace={namespace}"
        async with pycomms.connect(server_url, services=[svc], **good) as server:
            async with pycomms.connect(f"tcp://127.0.0.1:0?namespace={namespace}", **good) as client:
                assert await client.request(Ask(n=7), timeout=10 * scale()) == Echo(n=7, pid=0)
            lone = f"tcp://127.0.0.1:0?namespace={namespace}&discovery=off&seeds=127.0.0.1:{port}"
            with pytest.raises(pycomms.ConnectError, match="TLS handshake failed"):
                await pycomms.connect(lone, **other)  # a certificate from another CA
            async with pycomms.connect(lone) as plain:  # no TLS at all: the link dies in the TLS handshake
                assert [n.id for n in await plain.nodes()] == [plain.node.id]
            assert [n.id for n in await server.nodes()] == [server.node.id]

    run_strict(scenario, 90)
