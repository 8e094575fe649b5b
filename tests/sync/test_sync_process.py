"""`pycomms.sync` across process boundaries: opened while a module is imported, closed
at interpreter exit, and used in a child forked from the process that opened it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sync_messages import WhoAmI, echo_service

import pycomms.sync
from pycomms.testing import scale

HERE = Path(__file__).parent


def test_opened_at_import_time_and_closed_at_exit(redis_url: str) -> None:
    code = "import import_time_app as app; print('answer', app.ANSWER.n, app.ANSWER.pid == __import__('os').getpid())"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=HERE,
        env={**os.environ, "SYNC_TEST_URL": redis_url, "PYTHONPATH": str(HERE.parents[1] / "tests" / "support")},
        capture_output=True,
        text=True,
        timeout=60 * scale(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "answer 42 True"
    assert "Traceback" not in proc.stderr
    with pycomms.sync.connect(redis_url) as bus:  # closed at exit: gone from presence at once
        assert [n.name for n in bus.nodes()] == ["client"]


def run_in_child(work: str, bus: pycomms.sync.Bus) -> dict[str, object]:
    """Fork; in the child run ``work`` with the inherited ``bus`` and send back what it saw."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read)
            result = CHILD_WORK[work](bus)
            os.write(write, json.dumps(result).encode())
            code = 0
        except BaseException as exc:
            os.write(write, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(data or b"{}")
    assert os.waitstatus_to_exitcode(status) == 0, result
    return dict(result)


def child_uses_the_bus(bus: pycomms.sync.Bus) -> dict[str, object]:
    reply = bus.request(WhoAmI(n=5), timeout=30)
    nodes = bus.nodes()
    seen = {"pid": os.getpid(), "node": bus.node.id, "node_pid": bus.node.pid, "reply": reply.n}
    seen["nodes"] = sorted(n.id for n in nodes)
    bus.close()
    return seen


def child_only_closes(bus: pycomms.sync.Bus) -> dict[str, object]:
    bus.close()
    return {"closed": bus.closed}


CHILD_WORK = {"uses": child_uses_the_bus, "closes": child_only_closes}


# Python 3.12+ warns on fork() in a process with threads: forking a threaded server is
# exactly the case under test (the child never uses what the parent's threads held)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("work", list(CHILD_WORK))
def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(url: str, work: str) -> None:
    with pycomms.sync.connect(url, services=[echo_service()], name="prefork") as bus:
        parent_node = bus.node.id
        assert bus.request(WhoAmI(n=1), timeout=30).pid == os.getpid()
        seen = run_in_child(work, bus)
        if work == "uses":
            assert seen["pid"] != os.getpid()
            assert seen["node_pid"] == seen["pid"]
            assert seen["node"] != parent_node
            assert seen["reply"] == 5
            assert parent_node in seen["nodes"]  # type: ignore[operator]
            assert seen["node"] in seen["nodes"]  # type: ignore[operator]
        else:
            assert seen == {"closed": True}
        # the parent's connection and services are undisturbed by the child
        assert bus.request(WhoAmI(n=2), timeout=30).pid == os.getpid()
        assert [n.id for n in bus.nodes()] == [parent_node]  # the child's node left with it
        assert bus.node.id == parent_node


def test_the_demos_blocking_question(redis_url: str) -> None:
    """What ``pycomms demo`` prints on a cross-process backend. The whole demo over a
    broker starts three processes, too slow and load-sensitive for this suite;
    tests/core/test_cli.py runs it over memory://, where this step is skipped."""
    from pycomms._demo import _ask_blocking, build_service

    with pycomms.sync.connect(redis_url, services=[build_service("pricing")]):
        assert _ask_blocking(redis_url) == "a mug costs 12.50"
