"""Fixtures of the interop tests: a fresh namespace per test, and ``start_worker(url)``,
a real PyComms worker process (see interop_support.py), stopped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from interop_support import BackgroundClient, Worker, fresh_namespace


@pytest.fixture
def namespace() -> str:
    return fresh_namespace()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[str], Worker]]:
    """``start_worker(url)``: a running, ready worker on ``url``; stopped after the test."""
    workers: list[Worker] = []

    def start(url: str) -> Worker:
        worker = Worker(url, tmp_path / f"handled-{len(workers)}.jsonl")
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture(autouse=True)
def _stop_background_clients() -> Iterator[None]:
    """Clients a failed test left running are killed, and their pipes closed."""
    yield
    BackgroundClient.stop_leftovers()
