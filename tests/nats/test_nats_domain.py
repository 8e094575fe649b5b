"""JetStream domains (``domain=``): a bus on a leaf node reaches its hub's JetStream
through ``$JS.<domain>.API`` (events, requests, presence, dead letters and their replay),
a domain nobody serves and a server without JetStream are `ConnectError`s that say so,
and a domain that is not a subject token is refused before connecting."""

from __future__ import annotations

from pathlib import Path

import nats
import nats.errors
import pytest
from fault_proxy import free_port
from nats_support import PrivateNats

import pycomms
from pycomms import Event, Message, Request, Retry, Service
from pycomms.testing import Recorder, eventually, run_strict

pytestmark = [pytest.mark.timeout(120)]


class Shipped(Event, name="natsdomain.shipped"):
    n: int


class Doubled(Message, name="natsdomain.doubled"):
    n: int


class Double(Request[Doubled], name="natsdomain.double"):
    n: int


class Cursed(Event, name="natsdomain.cursed"):
    n: int


class HubAndLeaf:
    """A hub server whose JetStream has the domain ``hub``, and a leaf node without
    JetStream connected to it: a client of the leaf reaches the hub's JetStream only
    through ``$JS.hub.API`` (and the subjects the leaf forwards)."""

    def __init__(self, root: Path) -> None:
        leaf_port = free_port()
        (root / "hub").mkdir()
        (root / "leaf").mkdir()
        hub_conf = root / "hub.conf"
        hub_conf.write_text(
            f"leafnodes {{ listen: 127.0.0.1:{leaf_port} }}\njetstream {{ domain: hub }}\n", encoding="utf-8"
        )
        leaf_conf = root / "leaf.conf"
        leaf_conf.write_text(
            f'leafnodes {{ remotes = [ {{ url: "nats-leaf://127.0.0.1:{leaf_port}" }} ] }}\n', encoding="utf-8"
        )
        self.hub = PrivateNats(root / "hub", extra=("-c", str(hub_conf)))
        self.leaf = PrivateNats(root / "leaf", extra=("-c", str(leaf_conf)), jetstream=False)

    def start(self) -> None:
        self.hub.start()
        try:
            self.leaf.start()
            wait_leaf_connected(self.leaf)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.leaf.stop()
        self.hub.stop()


def wait_leaf_connected(leaf: PrivateNats) -> None:
    """Until a client of the leaf gets an answer from the hub's JetStream (the leaf's log
    says the link is up before the two have exchanged interest)."""

    async def answered() -> bool:
        client = await nats.connect(f"nats://{leaf.address}")
        try:
            await client.request("$JS.hub.API.INFO", b"", timeout=0.5)
            return True
        except nats.errors.Error:
            return False
        finally:
            await client.close()

    run_strict(lambda: eventually(answered, 20, "the hub's JetStream answering through the leaf node"), 30)


def test_a_bus_in_a_jetstream_domain(tmp_path: Path) -> None:
    servers = HubAndLeaf(tmp_path)
    servers.start()
    url = f"nats://{servers.leaf.address}?namespace=dom&domain=hub"

    async def scenario() -> None:
        shipped = Recorder()
        attempts = Recorder()
        svc = Service("warehouse", retry=Retry(max_attempts=1))

        @svc.on
        async def on_shipped(event: Shipped) -> None:
            shipped.add(event.n)

        @svc.on
        async def double(request: Double) -> Doubled:
            return Doubled(n=request.n * 2)

        @svc.on
        async def on_cursed(event: Cursed) -> None:
            attempts.add(event.n)
            if len(attempts.items) == 1:
                raise RuntimeError("cursed")

        async with (
            pycomms.connect(url, services=[svc], name="warehouse"),
            pycomms.connect(url, name="client") as client,
        ):
            await client.publish(Shipped(n=1), Shipped(n=2))
            await shipped.wait(2, 10)
            assert (await client.request(Double(n=21), timeout=10)).n == 42
            assert {node.name for node in await client.nodes()} == {"warehouse", "client"}
            await client.publish(Cursed(n=7))

            async def dead_lettered() -> bool:
                return len(await client.dead_letters("warehouse")) == 1

            await eventually(dead_lettered, 10, "the failed event in the dead letters")
            assert await client.replay("warehouse") == 1
            await attempts.wait(2, 10)  # handled again after the replay, and this time it passes
            assert await client.dead_letters("warehouse") == []  # replayed letters leave the store
        admin = await pycomms.connect(url)
        await admin.drop_namespace(force=True)

    try:
        run_strict(scenario, 60)
    finally:
        servers.stop()


def test_a_domain_nobody_serves_is_a_connect_error_naming_it(tmp_path: Path) -> None:
    servers = HubAndLeaf(tmp_path)
    servers.start()
    server = servers.leaf

    async def scenario() -> None:
        with pytest.raises(pycomms.ConnectError) as caught:
            await pycomms.connect(f"nats://{server.address}?namespace=dom&domain=elsewhere&connect_timeout=5")
        assert str(caught.value) == (
            f"nats: no JetStream answers on $JS.elsewhere.API at {server.address}: "
            "is 'elsewhere' the domain (option domain), and does this server reach it?"
        )

    try:
        run_strict(scenario, 30)
    finally:
        servers.stop()


def test_a_server_without_jetstream_is_a_connect_error_saying_so(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path, jetstream=False)
    server.start()

    async def scenario() -> None:
        with pytest.raises(pycomms.ConnectError) as caught:
            await pycomms.connect(f"nats://{server.address}?namespace=dom&connect_timeout=5")
        assert str(caught.value) == (
            f"nats: no JetStream answers on $JS.API at {server.address}: is JetStream enabled (nats-server -js) and up?"
        )

    try:
        run_strict(scenario, 30)
    finally:
        server.stop()


def test_a_domain_that_is_not_a_subject_token_is_refused() -> None:
    async def scenario() -> None:
        with pytest.raises(pycomms.ConfigError, match=r"option 'domain'.*got 'hub\.east'"):
            await pycomms.connect("nats://127.0.0.1:1?namespace=dom&domain=hub.east")

    run_strict(scenario, 10)
