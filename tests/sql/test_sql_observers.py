"""Ephemeral services on SQL leave nothing behind: their subscription, messages and
registration go when they close, and those of an observer whose node died are swept by
another node's presence loop."""

from __future__ import annotations

import json

import pytest
from sql_helpers import sqlalchemy_url, with_options
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, eventually, run_strict

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(60)]


class Tick(Event, name="observers.tick"):
    n: int


async def count(engine: AsyncEngine, namespace: str, table: str, where: str) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(text(f"SELECT count(*) FROM pycomms_{namespace}_{table} WHERE {where}"))).scalar()
        )


def test_closing_an_ephemeral_service_removes_its_rows(url: str, namespace: str) -> None:
    async def scenario() -> None:
        engine = create_async_engine(sqlalchemy_url(url))
        rec = Recorder()
        tail = Service("tail", ephemeral=True)

        @tail.on
        async def seen(msg: Tick) -> None:
            rec.add(msg.n)

        try:
            async with pycomms.connect(url) as pub:
                async with pycomms.connect(url, services=[tail]):
                    assert await count(engine, namespace, "subscriptions", "service = 'tail'") == 1
                    assert await count(engine, namespace, "meta", "name LIKE 'observer:%'") == 1
                    await pub.publish(Tick(n=1))
                    await rec.wait(1, 10)
                await pub.publish(Tick(n=2))  # nobody subscribed: stored for no one
                assert await count(engine, namespace, "subscriptions", "service = 'tail'") == 0
                assert await count(engine, namespace, "meta", "name LIKE 'observer:%'") == 0
                assert await count(engine, namespace, "messages", "queue = 'tail'") == 0
        finally:
            await engine.dispose()

    run_strict(scenario, 30)


def test_the_rows_of_an_observer_whose_node_died_are_swept(url: str, namespace: str) -> None:
    async def scenario() -> None:
        engine = create_async_engine(sqlalchemy_url(url))
        try:
            async with pycomms.connect(url) as pub:  # creates the tables
                async with engine.begin() as conn:
                    await conn.execute(
                        text(f"INSERT INTO pycomms_{namespace}_subscriptions VALUES (:t, :s, 'event')"),
                        {"t": Tick.type_name, "s": "orphan"},
                    )
                    await conn.execute(
                        text(f"INSERT INTO pycomms_{namespace}_meta (name, value) VALUES ('observer:dead', :v)"),
                        {"v": json.dumps({"service": "orphan", "node": "dead0000node"})},
                    )
                await pub.publish(Tick(n=1))  # stored for the orphan until the sweep
                async with pycomms.connect(with_options(url, heartbeat=0.05)):

                    async def swept() -> bool:
                        return (
                            await count(engine, namespace, "subscriptions", "service = 'orphan'") == 0
                            and await count(engine, namespace, "messages", "queue = 'orphan'") == 0
                            and await count(engine, namespace, "meta", "name LIKE 'observer:%'") == 0
                        )

                    await eventually(swept, 20, "the dead observer's rows to be swept")
        finally:
            await engine.dispose()

    run_strict(scenario, 40)
