"""Pure logic of pycomms-sql: group commit, table naming, SQLite URL paths."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycomms.testing import run_strict
from pycomms_sql._batching import Coalescer
from pycomms_sql._schema import make_tables, namespace_ident
from pycomms_sql._url import parse_target

NAMESPACES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def test_concurrent_submissions_share_flushes() -> None:
    async def main() -> None:
        flushes: list[list[int]] = []
        gate, started = asyncio.Event(), asyncio.Event()

        async def flush(items: list[int]) -> None:
            flushes.append(items)
            started.set()
            await gate.wait()

        batcher: Coalescer[int] = Coalescer(flush, max_batch=100, parallel=1)
        calls = [asyncio.create_task(batcher.submit([0]))]
        await started.wait()  # the first flush is under way
        calls += [asyncio.create_task(batcher.submit([n])) for n in range(1, 50)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*calls)
        assert [n for batch in flushes for n in batch] == list(range(50))
        assert len(flushes) == 2, "the first caller's flush, then everyone who queued meanwhile"

    run_strict(main, 10)


def test_a_failed_flush_fails_its_callers_only() -> None:
    async def main() -> None:
        async def flush(items: list[int]) -> None:
            if -1 in items:
                raise RuntimeError("boom")

        batcher: Coalescer[int] = Coalescer(flush, max_batch=1, parallel=1)
        with pytest.raises(RuntimeError):
            await batcher.submit([-1])
        await batcher.submit([1])
        await batcher.drain()

    run_strict(main, 10)


def test_a_caller_cancelled_before_the_flush_withdraws_its_items() -> None:
    async def main() -> None:
        flushed: list[int] = []
        gate = asyncio.Event()

        async def flush(items: list[int]) -> None:
            flushed.extend(items)
            await gate.wait()

        batcher: Coalescer[int] = Coalescer(flush, max_batch=10, parallel=1)
        first = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0)
        second = asyncio.create_task(batcher.submit([2]))
        await asyncio.sleep(0)
        second.cancel()
        gate.set()
        await first
        await batcher.drain()
        assert flushed == [1]

    run_strict(main, 10)


@given(st.sets(NAMESPACES, min_size=2, max_size=20))
def test_namespace_idents_are_distinct_safe_and_short(namespaces: set[str]) -> None:
    idents = {namespace_ident(ns) for ns in namespaces}
    assert len(idents) == len(namespaces)
    for ident in idents:
        assert re.fullmatch(r"[a-z0-9_]{1,36}", ident)
        assert all(len(table.name) <= 63 for table in make_tables(ident).metadata.tables.values())


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("sqlite:///rel.db", "rel.db"),  # as typed
        ("sqlite:////abs/x.db", "/abs/x.db"),
        ("sqlite:/rel.db", "rel.db"),  # as core's urlunsplit passes them on
        ("sqlite://abs/x.db", "/abs/x.db"),
    ],
)
def test_sqlite_paths_in_both_spellings(url: str, database: str) -> None:
    assert parse_target(url).url.database == database


def test_long_namespaces_fit_postgresql_identifiers() -> None:
    """Core accepts 64-character namespaces; every table and index name must still fit 63."""
    for namespace in ("n" * 64, "Mixed.Case-name_" * 4, "short"):
        tables = make_tables(namespace[:64])
        assert len(namespace_ident(namespace[:64])) <= 30
        names = [t.name for t in tables.metadata.sorted_tables]
        names += [i.name for t in tables.metadata.sorted_tables for i in t.indexes if i.name]
        assert all(len(name) <= 63 for name in names), names
    assert namespace_ident("n" * 64) != namespace_ident("n" * 63)
