"""``pycomms dlq replay`` of 10,000 dead letters: progress shown, none lost, none doubled.

The count is the one issue 7 asks for; do not lower it to make the test quicker. The
10,000 letters are made the way production makes them: a broken handler rejects
10,000 commands. Then the handler is fixed and the CLI replays them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_messages import Job
from cli_support import backend_url, drop_namespace, fresh_namespace, pycomms

from pycomms import Context, Reject, Service, connect
from pycomms.testing import Recorder, eventually, run_strict

pytestmark = pytest.mark.timeout(900)
LETTERS = 10_000
SERVICE = "bulk"
BATCH = 500  # commands per send() round trip while filling the dead letters
PROGRESS = re.compile(r"^replay: \[#*\s*\] (\d+)/(\d+) \(\d+\.\d+s\)$")


@pytest.fixture(params=["redis", "tcp", "amqp", "nats"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Redis, RabbitMQ and NATS (about 20 s each to fill with 10,000 dead letters and
    replay them; the SQL backends take about a minute to fill), and tcp://, whose letters
    are listed from the node that keeps them in pages of RPC answers."""
    url = backend_url(request.param, fresh_namespace(), tmp_path)
    yield url
    drop_namespace(url)


def test_replay_of_10000_dead_letters_shows_progress_and_loses_none(url: str) -> None:

    async def scenario() -> None:
        rejected = Recorder()
        handled = Recorder()
        broken = True
        service = Service(SERVICE, concurrency=64)

        @service.on
        async def job(command: Job, ctx: Context) -> None:
            if broken:
                rejected.add(ctx.message_id)
                raise Reject("broken until the fix is deployed")
            handled.add(ctx.message_id)

        async with connect(url, services=[service]) as bus:
            for start in range(0, LETTERS, BATCH):
                await bus.send(*(Job(n=n) for n in range(start, start + BATCH)))
            await rejected.wait(LETTERS, 300)

            async def all_dead() -> bool:
                return len(await bus.dead_letters(SERVICE, limit=2 * LETTERS)) == LETTERS

            await eventually(all_dead, 60, f"{LETTERS} dead letters", interval=0.5)
            ids = {letter.id for letter in await bus.dead_letters(SERVICE, limit=2 * LETTERS)}
            assert ids == set(rejected.counts)

            broken = False  # the fix is deployed
            replayed = await pycomms("dlq", "replay", SERVICE, "--url", url)
            assert f"replay: {LETTERS} of {LETTERS} dead letter(s) of {SERVICE}" in replayed.ok().stderr
            progress = [m for m in map(PROGRESS.match, replayed.stderr.splitlines()) if m]
            assert len(progress) >= 2, replayed.stderr  # a bar that moves, not only a final line
            counts = [int(m[1]) for m in progress]
            assert counts == sorted(counts)
            assert counts[-1] == LETTERS
            assert {int(m[2]) for m in progress} == {LETTERS}

            await handled.wait(LETTERS, 300)
            assert await bus.dead_letters(SERVICE) == []
        handled.assert_exactly_once(ids)
        rejected.assert_exactly_once(ids)  # the replay was not rejected again: each id failed once

    run_strict(scenario, 840)
