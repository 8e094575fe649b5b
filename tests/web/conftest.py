"""Fixtures of the web-recipe tests: a fresh Redis namespace (Redis: the simplest
cross-process backend), and a collector of the orders the web apps publish."""

from __future__ import annotations

import signal
import sys
import uuid
from collections.abc import Iterator

import pytest
from shared_services import REDIS_URL
from web_support import WEB, Orders

import pycomms.sync
from pycomms import Service
from pycomms.testing import require_reachable

sys.path.insert(0, str(WEB))  # the recipes' shop_messages, as the servers import it

# A runner that started pytest with SIGINT ignored (nohup, a background job of a
# non-interactive shell) passes that on to the servers, and an ignored SIGINT is kept by
# Python: runserver, stopped with SIGINT as a user's Ctrl-C stops it, would never stop.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def url() -> Iterator[str]:
    require_reachable(REDIS_URL, 6379)
    url = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}namespace=web{uuid.uuid4().hex[:12]}&aof_warning=false"
    yield url
    with pycomms.sync.connect(url) as bus:
        bus.drop_namespace(force=True)


@pytest.fixture
def orders(url: str) -> Iterator[Orders]:
    from shop_messages import OrderPlaced  # after the path is set

    seen = Orders()
    audit = Service("audit")

    @audit.on(OrderPlaced)  # imported in the function: its annotation cannot be resolved
    def placed(event: OrderPlaced) -> None:
        seen.add(event.order_id)

    with pycomms.sync.connect(url, services=[audit], name="audit"):
        yield seen
