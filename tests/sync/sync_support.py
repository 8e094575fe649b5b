"""Helpers of the blocking-API tests: backend URLs in fresh namespaces, and a
thread-safe counter to wait on (the async `Recorder` needs an event loop)."""

from __future__ import annotations

import collections
import importlib.util
import threading
import uuid
from collections.abc import Hashable, Iterable

from shared_services import AMQP_URL, POSTGRES_URL, REDIS_URL

import pycomms.sync
from pycomms.testing import require_reachable, scale, unavailable

#: backend -> (import package, base URL, default port)
BACKENDS = {
    "redis": ("pycomms_redis", REDIS_URL, 6379),
    "amqp": ("pycomms_amqp", AMQP_URL, 5672),
    "postgresql": ("pycomms_sql", POSTGRES_URL, 5432),
}


def backend_url(backend: str) -> str:
    """``backend``'s URL in a fresh namespace; skipped (failed under ``CI=true``) when unusable."""
    package, base, port = BACKENDS[backend]
    if importlib.util.find_spec(package) is None:
        unavailable(f"{package} is not installed")
    require_reachable(base, port)
    url = f"{base}{'&' if '?' in base else '?'}namespace=sync{uuid.uuid4().hex[:12]}"
    return url + "&aof_warning=false" if backend == "redis" else url


def drop_namespace(url: str) -> None:
    with pycomms.sync.connect(url) as bus:
        bus.drop_namespace(force=True)


class Counter:
    """What handlers saw, counted from any thread; `wait` blocks until a total is reached."""

    def __init__(self) -> None:
        self.counts: collections.Counter[Hashable] = collections.Counter()
        self._changed = threading.Condition()

    def add(self, key: Hashable) -> None:
        with self._changed:
            self.counts[key] += 1
            self._changed.notify_all()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def wait(self, total: int, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.total >= total, timeout * scale()):
                raise AssertionError(f"waited {timeout * scale():.1f}s for {total} deliveries, got {self.total}")

    def assert_exactly_once(self, keys: Iterable[Hashable]) -> None:
        expected = set(keys)
        assert set(self.counts) == expected, (sorted(map(str, expected - set(self.counts)))[:5], "missing")
        duplicates = {k: c for k, c in self.counts.items() if c > 1}
        assert not duplicates, f"delivered more than once: {list(duplicates.items())[:5]}"
