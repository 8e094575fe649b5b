"""The CLI's day-two commands (publish, send, request, nodes, listen, dlq, bench) on
``nats://``: the scenarios of tests/cli, run with a NATS URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import drop_namespace, fresh_namespace
from nats_support import NATS_URL, url_for
from test_cli_backends import (
    test_dead_letters_ls_show_replay_purge,
    test_listen_tails_events_beside_the_services,
    test_nodes,
    test_publish_send_request,
)
from test_cli_bench import test_bench_smoke
from test_cli_namespace import test_namespace_drop_refuses_while_in_use_then_leaves_nothing

__all__ = [
    "test_bench_smoke",
    "test_dead_letters_ls_show_replay_purge",
    "test_listen_tails_events_beside_the_services",
    "test_namespace_drop_refuses_while_in_use_then_leaves_nothing",
    "test_nodes",
    "test_publish_send_request",
]


@pytest.fixture(autouse=True)
def private_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))


@pytest.fixture
def backend() -> str:
    return "nats"


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    url = url_for(fresh_namespace(), NATS_URL)
    yield url
    drop_namespace(url)
