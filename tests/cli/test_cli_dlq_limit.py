"""``pycomms dlq replay|purge`` past ``--limit``: without filters they list again until
no letter is left; with filters, a listing cut at the limit is reported, not passed off
as complete."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_messages import Job
from cli_support import backend_url, fresh_namespace, pycomms

from pycomms import Context, Reject, Service, connect
from pycomms.testing import Recorder, eventually, run_strict

pytestmark = pytest.mark.timeout(300)
SERVICE = "limited"


def test_replay_goes_past_the_limit_and_a_cut_filtered_listing_fails(tmp_path: Path) -> None:
    url = backend_url("sqlite", fresh_namespace(), tmp_path)

    async def scenario() -> None:
        handled = Recorder()
        broken = True
        service = Service(SERVICE)

        @service.on
        async def job(command: Job, ctx: Context) -> None:
            if broken:
                raise Reject("broken")
            handled.add(ctx.message_id)

        async with connect(url, services=[service]) as bus:
            await bus.send(*(Job(n=n) for n in range(25)))

            async def dead(count: int) -> bool:
                return len(await bus.dead_letters(SERVICE, limit=100)) == count

            await eventually(lambda: dead(25), 60, "25 dead letters")
            cut = await pycomms("dlq", "purge", SERVICE, "--type", "cli.job", "--limit", "10", "--url", url)
            assert cut.returncode == 1, cut
            assert "purge: 10 of 10 dead letter(s)" in cut.stderr
            assert "warning: listed the oldest 10 dead letters (--limit); more may remain" in cut.stderr
            await eventually(lambda: dead(15), 30, "15 dead letters left")

            broken = False
            replayed = await pycomms("dlq", "replay", SERVICE, "--limit", "4", "--url", url)
            assert "replay: 15 of 15 dead letter(s)" in replayed.ok().stderr
            await handled.wait(15, 60)
            assert await bus.dead_letters(SERVICE) == []

    run_strict(scenario, 240)
