"""``pycomms namespace drop URL`` against every cross-process backend, and what
``pycomms publish`` says when nothing took the message."""

from __future__ import annotations

import pytest
from cli_messages import Job, Note
from cli_support import message, pycomms

from pycomms import Reject, Service, connect
from pycomms.testing import eventually, run_strict

pytestmark = pytest.mark.timeout(300)


def test_namespace_drop_refuses_while_in_use_then_leaves_nothing(url: str) -> None:
    async def scenario() -> None:
        service = Service("dropme")

        @service.on
        async def refuse(command: Job) -> None:
            raise Reject("kept as a dead letter")

        async with connect(url, services=[service], name="drop-test-node") as bus:
            await bus.send(Job(n=1), Job(n=2))

            async def lettered() -> bool:
                return len(await bus.dead_letters(service)) == 2

            await eventually(lettered, 30, "two dead letters")
            refused = await pycomms("namespace", "drop", url)
            assert refused.returncode == 1, str(refused)
            assert "in use by 1 node(s): drop-test-node" in refused.stderr, str(refused)
            assert len(await bus.dead_letters(service)) == 2  # the refusal removed nothing

        dropped = (await pycomms("namespace", "drop", url)).ok()
        assert "dropped:" in dropped.stdout, str(dropped)
        async with connect(url) as bus:
            assert await bus.dead_letters(service) == []
        listing = (await pycomms("dlq", "ls", "dropme", "--url", url)).ok()
        assert "Job" not in listing.stdout, str(listing)

    run_strict(scenario, 240)


def test_namespace_drop_with_force_while_a_node_runs(url: str) -> None:
    """Forced, the drop goes ahead; the node it ran under still closes cleanly (what it
    does in between, with its objects gone, is the backend's business)."""

    async def scenario() -> None:
        bus = await connect(url, services=[Service("bystander")])
        try:
            forced = (await pycomms("namespace", "drop", url, "--force")).ok()
            assert "dropped:" in forced.stdout, str(forced)
        finally:
            await bus.close(grace=1)
        assert bus.closed

    run_strict(scenario, 240)


def test_publish_that_nothing_took_is_reported_not_delivered() -> None:
    """tcp:// with no other node: the event was only held in memory when the command
    ended, so the command says so and exits non-zero (pointing at spool=)."""

    async def scenario() -> None:
        result = await pycomms("publish", message("Note"), Note(text="hi").model_dump_json(), "--url", "tcp://")
        assert result.returncode == 1, str(result)
        assert "NOT delivered" in result.stderr, str(result)
        assert "spool=" in result.stderr, str(result)

    run_strict(scenario, 120)
