"""Connection faults on the shared server: a link that silently stops passing data is
detected within 5 s and every consumer carries on over a new connection."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import pytest
from fault_proxy import FaultProxy
from redis_support import REDIS_URL, PrivateRedis, new_namespace, url_for

import pycomms
from pycomms import Command, PublishError, Service
from pycomms.testing import Recorder, run_strict, scale


class Probe(Command, name="connection.probe"):
    n: int


def _proxied(namespace: str, proxy: FaultProxy, **options: object) -> str:
    parts = urlsplit(REDIS_URL)
    userinfo = parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else ""
    base = f"redis://{userinfo}127.0.0.1:{proxy.port}{parts.path}"
    return url_for(namespace, base=base, aof_warning="false", **options)


def _target_port() -> int:
    return urlsplit(REDIS_URL).port or 6379


def test_silent_dead_connection_is_detected_within_5s(namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pycomms.redis")

    async def scenario() -> None:
        rec = Recorder()
        svc = Service("prober")

        @svc.on
        async def handle(probe: Probe) -> None:
            rec.add(probe.n, time.monotonic())

        proxy = FaultProxy(("127.0.0.1", _target_port())).start()
        try:
            async with (
                pycomms.connect(_proxied(namespace, proxy), services=[svc]) as consumer,
                pycomms.connect(url_for(namespace, aof_warning="false")) as direct,
            ):
                await direct.send(Probe(n=1))
                await rec.wait(1, 10)
                proxy.silence(new_links="forward")  # every connection the consumer holds goes silent
                stalled = time.monotonic()
                await direct.send(Probe(n=2))
                await rec.wait(2, 15)
                detected = rec.items[1] - stalled
                print(f"\n[measured] consumer back on a new connection {detected:.2f}s after the link went silent")
                assert detected < 5.0 * scale(), f"handled {detected:.1f}s after the link went silent"
                assert bus_nodes_contains(await direct.nodes(), consumer.node.id)
        finally:
            proxy.stop()

    run_strict(scenario, 60)


def test_publish_on_a_silent_connection_fails_within_5s(namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pycomms.redis")

    async def scenario() -> None:
        proxy = FaultProxy(("127.0.0.1", _target_port())).start()
        try:
            async with pycomms.connect(_proxied(namespace, proxy, operation_timeout=2)) as bus:
                await bus.send(Probe(n=1))
                proxy.silence(new_links="forward")
                started = time.monotonic()
                with pytest.raises(PublishError, match=r"timed out after 2.0s \(operation_timeout\)"):
                    await bus.send(Probe(n=2))
                failed = time.monotonic() - started
                print(f"\n[measured] publish on the silent link failed after {failed:.2f}s")
                assert failed < 5.0 * scale()
        finally:
            proxy.stop()

    run_strict(scenario, 60)


def bus_nodes_contains(nodes: list[pycomms.NodeInfo], node_id: str) -> bool:
    return any(n.id == node_id for n in nodes)


def test_close_with_the_server_down_is_prompt_and_quiet(private_redis: PrivateRedis) -> None:
    async def scenario() -> None:
        svc = Service("orphan")

        @svc.on
        async def handle(probe: Probe) -> None:
            pass

        bus = await pycomms.connect(url_for(new_namespace(), base=private_redis.url), services=[svc])
        await bus.send(Probe(n=1))
        private_redis.kill()
        started = time.monotonic()
        await bus.close()
        assert time.monotonic() - started < 10 * scale()
        assert bus.closed

    run_strict(scenario, 30)
