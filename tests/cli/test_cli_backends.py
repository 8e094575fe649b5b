"""The day-two commands against every cross-process backend, as a user runs them.

Each test serves a real service in this process (a bus with handlers) and drives it
with the ``pycomms`` command in subprocesses, through ``--url`` and ``$PYCOMMS_URL``.
Commands that do not depend on each other run concurrently to keep the run short.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Coroutine
from typing import Any

import pytest
from cli_messages import Answer, Ask, Job, Note
from cli_support import CLI_TIMEOUT, Result, finish, message, pycomms, start

from pycomms import Context, Reject, Service, connect
from pycomms.testing import Recorder, eventually, run_strict, scale

pytestmark = pytest.mark.timeout(300)
SERVICE = "clisvc"
NODE_NAME = "cli-test-node"


async def together(concurrently: bool, *runs: Coroutine[Any, Any, Result]) -> list[Result]:
    """The results of ``runs``, run concurrently or one after the other."""
    if concurrently:
        return list(await asyncio.gather(*runs))
    return [await run for run in runs]


def serving_service(rec: Recorder) -> Service:
    """The service the CLI talks to: records events and commands, answers requests."""
    service = Service(SERVICE)

    @service.on
    async def note(event: Note) -> None:
        rec.add(("note", event.text))

    @service.on
    async def job(command: Job) -> None:
        rec.add(("job", command.n))

    @service.on
    async def ask(request: Ask) -> Answer:
        return Answer(n=request.n * 2)

    return service


def test_publish_send_request(url: str) -> None:
    """Each message is handled exactly once; a reply is printed as JSON; a request
    nobody handles ends in a timeout error, not a hang."""

    async def scenario() -> None:
        rec = Recorder()
        async with connect(url, services=[serving_service(rec)], name=NODE_NAME):
            published, sent, reply, unhandled = await asyncio.gather(
                pycomms("publish", message("Note"), '{"text": "héllo ✓"}', "--url", url),
                pycomms("send", message("Job"), env_url=url, stdin='{"n": 7}'),  # the body from stdin
                pycomms("request", message("Ask"), '{"n": 21}', "--url", url),
                pycomms("request", message("Unhandled"), '{"n": 1}', "--timeout", "2", env_url=url),
            )
            await rec.wait(2, 30)
            assert "publish: cli.note accepted" in published.ok().stderr
            assert "send: cli.job accepted" in sent.ok().stderr
            assert Answer.model_validate_json(reply.ok().stdout) == Answer(n=42)
            assert unhandled.returncode == 1, unhandled
            assert "error: no reply to cli.unhandled" in unhandled.stderr
        rec.assert_exactly_once([("note", "héllo ✓"), ("job", 7)])

    run_strict(scenario, 240)


def test_nodes(url: str) -> None:
    """``pycomms nodes`` shows the serving node to a process that has just connected."""

    async def scenario() -> None:
        async with connect(url, services=[serving_service(Recorder())], name=NODE_NAME) as bus:
            table, as_json = await asyncio.gather(
                pycomms("nodes", "--url", url),
                pycomms("nodes", "--json", env_url=url),
            )
            header, *rows = table.ok().stdout.splitlines()
            assert header.split() == ["NAME", "ID", "SERVICES", "HANDLES", "HOST:PID", "LAST", "SEEN"]
            [row] = [line for line in rows if NODE_NAME in line]
            assert row.split()[:5] == [
                NODE_NAME,
                bus.node.id,
                SERVICE,
                "cli.ask,cli.job,cli.note",
                f"{socket.gethostname()}:{os.getpid()}",
            ]
            records = [json.loads(line) for line in as_json.ok().stdout.splitlines()]
            [mine] = [r for r in records if r["id"] == bus.node.id]
            assert (mine["name"], mine["services"], mine["pid"]) == (NODE_NAME, [SERVICE], os.getpid())
            assert mine["handles"] == ["cli.ask", "cli.job", "cli.note"]
            # the other one, if any, is the concurrent `pycomms nodes`; a CLI never lists itself
            assert all(r["name"] == "pycomms-cli" for r in records if r is not mine)

    run_strict(scenario, 240)


def test_listen_tails_events_beside_the_services(url: str) -> None:
    """``pycomms listen`` gets its own copy of each event and takes none away from the
    service that handles the type."""
    args = ("listen", message("Note"), "--json", "--count", "2", "--url", url)

    async def scenario() -> None:
        rec = Recorder()
        async with connect(url, services=[serving_service(rec)]) as bus:
            listener = await start(*args)
            try:
                assert listener.stderr is not None
                async with asyncio.timeout(CLI_TIMEOUT * scale()):
                    ready = (await listener.stderr.readline()).decode()
                assert ready.startswith("listening for cli.note"), ready
                await bus.publish(Note(text="one"), Note(text="two"))
                heard = await finish(listener, args)
            finally:
                if listener.returncode is None:
                    listener.kill()
                    await listener.communicate()
            await rec.wait(2, 30)
        assert "listen: 2 event(s)" in heard.ok().stderr
        records = [json.loads(line) for line in heard.stdout.splitlines()]
        assert [r["type"] for r in records] == ["cli.note", "cli.note"]
        assert sorted(r["body"]["text"] for r in records) == ["one", "two"]  # no order without a key
        rec.assert_exactly_once([("note", "one"), ("note", "two")])

    run_strict(scenario, 240)


def test_bad_input_is_refused_before_connecting() -> None:
    """Validation errors as pydantic shows them, and a kind mismatch; nothing is sent.
    The URL points at a port nobody listens on: these must fail before connecting."""
    nowhere = "redis://127.0.0.1:9/0"

    async def scenario() -> None:
        invalid, wrong_kind = await asyncio.gather(
            pycomms("send", message("Job"), '{"n": "seven"}', "--url", nowhere),
            pycomms("publish", message("Job"), '{"n": 1}', env_url=nowhere),
        )
        assert invalid.returncode == 2, invalid
        assert "invalid Job" in invalid.stderr
        assert "Input should be a valid integer" in invalid.stderr
        assert wrong_kind.returncode == 1, wrong_kind
        assert "the kind of Job is 'command'" in wrong_kind.stderr

    run_strict(scenario, 120)


def test_dead_letters_ls_show_replay_purge(url: str, backend: str) -> None:
    """Three jobs fail for good while the handler is broken; the operator looks at
    them, fixes the handler, replays one and purges the other two."""

    async def scenario() -> None:
        rec = Recorder()
        broken = True
        service = Service(SERVICE)

        @service.on
        async def job(command: Job, ctx: Context) -> None:
            if broken:
                raise Reject(f"job {command.n}: not today")
            rec.add(ctx.message_id, command.n)

        async with connect(url, services=[service], name=NODE_NAME) as bus:
            await bus.send(*(Job(n=n) for n in (1, 2, 3)))

            async def three_dead() -> bool:
                return len(await bus.dead_letters(SERVICE)) == 3

            await eventually(three_dead, 30, "3 dead letters")
            letters = {letter.body["n"]: letter for letter in await bus.dead_letters(SERVICE)}
            first = letters[1].id

            # pycomms-amqp lists dead letters by taking them for a moment (AMQP has no peek),
            # hiding them from a concurrent listing, as its docs say: one at a time there
            table, as_json, shown, dry_replay, dry_purge = await together(
                backend != "amqp",
                pycomms("dlq", "ls", SERVICE, "--url", url),
                pycomms("dlq", "ls", SERVICE, "--json", "--type", "cli.job", env_url=url),
                pycomms("dlq", "show", SERVICE, "--id", first, "--url", url),
                pycomms("dlq", "replay", SERVICE, "--dry-run", "--older-than", "0", env_url=url),
                pycomms("dlq", "purge", SERVICE, "--dry-run", "--type", "cli.other", "--url", url),
            )
            lines = table.ok().stdout.splitlines()
            assert lines[0].split() == ["ID", "TYPE", "REASON", "ATTEMPTS", "FAILED", "AT", "ERROR"]
            assert len(lines) == 4, table
            for letter in letters.values():
                [row] = [line for line in lines if letter.id in line]
                assert "cli.job" in row
                assert "rejected" in row
                assert f"job {letter.body['n']}: not today" in row
            records = [json.loads(line) for line in as_json.ok().stdout.splitlines()]
            assert sorted(r["body"]["n"] for r in records) == [1, 2, 3]
            assert {r["id"] for r in records} == {letter.id for letter in letters.values()}
            assert all(r["service"] == SERVICE and r["reason"] == "rejected" for r in records)
            assert all("envelope" not in r for r in records)  # ls is the summary
            assert f"id:        {first}" in shown.ok().stdout
            assert 'body:      {"n": 1}' in shown.stdout
            assert shown.stdout.count("id:") == 1
            assert "would replay 3 dead letter(s) of clisvc" in dry_replay.ok().stderr
            assert "would purge 0 dead letter(s) of clisvc" in dry_purge.ok().stderr  # no letter of that type
            assert len(await bus.dead_letters(SERVICE)) == 3  # the dry runs changed nothing

            broken = False  # the fix is deployed
            replayed = await pycomms("dlq", "replay", SERVICE, "--id", first, env_url=url)
            assert "replay: 1 of 1 dead letter(s) of clisvc" in replayed.ok().stderr
            await rec.wait(1, 30)
            purged = await pycomms("dlq", "purge", SERVICE, "--url", url)
            assert "purge: 2 of 2 dead letter(s) of clisvc" in purged.ok().stderr
            assert await bus.dead_letters(SERVICE) == []
        rec.assert_exactly_once([first])  # replayed with its id; the purged two never ran
        assert rec.items == [1]

    run_strict(scenario, 240)
