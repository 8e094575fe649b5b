"""Named baselines, one module each, keyed by the URL scheme they compare against.

A baseline module exposes ``make(url) -> Implementation`` (see ``bench._impl``). Modules
are imported only when selected, so a missing bench-only dependency (FastStream,
pyzmq) affects only the baselines that need it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from bench._impl import Implementation

MODULES: dict[str, str] = {
    "queue": "bench.baselines.queue",
    "redis-py": "bench.baselines.redis_raw",
    "faststream-redis": "bench.baselines.faststream_redis",
    "aio-pika": "bench.baselines.aiopika_raw",
    "faststream-rabbit": "bench.baselines.faststream_rabbit",
    "asyncpg": "bench.baselines.asyncpg_raw",
    "asyncio-tcp": "bench.baselines.tcp_raw",
    "asyncio-tcp-lean": "bench.baselines.tcp_lean",
    "pyzmq": "bench.baselines.zmq_push",
    "nats-py": "bench.baselines.nats_raw",
    "faststream-nats": "bench.baselines.faststream_nats",
    "aiomqtt": "bench.baselines.mqtt_raw",
    "faststream-mqtt": "bench.baselines.faststream_mqtt",
}

BY_SCHEME: dict[str, tuple[str, ...]] = {
    "memory": ("queue",),
    "redis": ("redis-py", "faststream-redis"),
    "rediss": ("redis-py", "faststream-redis"),
    "amqp": ("aio-pika", "faststream-rabbit"),
    "amqps": ("aio-pika", "faststream-rabbit"),
    "postgresql": ("asyncpg",),
    "postgres": ("asyncpg",),
    "tcp": ("asyncio-tcp", "asyncio-tcp-lean", "pyzmq"),
    "nats": ("nats-py", "faststream-nats"),
    "tls": ("nats-py", "faststream-nats"),
    "mqtt": ("aiomqtt", "faststream-mqtt"),
    "mqtts": ("aiomqtt", "faststream-mqtt"),
}


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A selected baseline that could not be loaded, and why."""

    name: str
    reason: str


def select(spec: str, scheme: str) -> list[str]:
    """Baseline names for ``--baselines``: ``auto`` (by scheme), ``none``, or ``a,b``."""
    if spec == "auto":
        return list(BY_SCHEME.get(scheme, ()))
    if spec == "none":
        return []
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODULES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; known: {', '.join(sorted(MODULES))}")
    return names


def load(name: str, url: str) -> Implementation | Unavailable:
    """The baseline ``name`` set up for ``url``, or why it cannot run here."""
    try:
        module = importlib.import_module(MODULES[name])
    except ImportError as exc:
        return Unavailable(name, f"{exc}; install the bench extras: .venv/bin/pip install -r bench/requirements.txt")
    impl: Implementation = module.make(url)
    return impl
