"""Helpers of the CLI tests: the backends to run against, fresh namespaces, and the
``pycomms`` command run as users run it, in a subprocess.

Every cross-process backend is covered. Service URLs come from the same variables as
the other tests (``PYCOMMS_TEST_*_URL``), defaulting to the local services; an
unreachable service is skipped locally and a failure under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from shared_services import AMQP_URL, MQTT_URL, MYSQL_URL, NATS_URL, POSTGRES_URL, REDIS_URL

from pycomms import connect
from pycomms.testing import require_reachable, run_strict, scale, unavailable

MESSAGES = Path(__file__).with_name("cli_messages.py")

#: backend name -> (distribution's import package, base URL, default port of its server)
BACKENDS: dict[str, tuple[str, str | None, int]] = {
    "tcp": ("pycomms_tcp", None, 0),
    "redis": ("pycomms_redis", REDIS_URL, 6379),
    "amqp": ("pycomms_amqp", AMQP_URL, 5672),
    "postgresql": ("pycomms_sql", POSTGRES_URL, 5432),
    "mysql": ("pycomms_sql", MYSQL_URL, 3306),
    "sqlite": ("pycomms_sql", None, 0),
    "nats": ("pycomms_nats", NATS_URL, 4222),
    "mqtt": ("pycomms_mqtt", MQTT_URL, 1883),
}
CLI_TIMEOUT = 120.0  # seconds (scaled) for one CLI run: start-up and connect on a busy machine


def message(cls: str) -> str:
    """The ``PATH:CLASS`` argument naming a class of cli_messages.py."""
    return f"{MESSAGES}:{cls}"


def fresh_namespace() -> str:
    return f"cli{uuid.uuid4().hex[:12]}"


def backend_url(backend: str, namespace: str, tmp_path: Path) -> str:
    """A URL of ``backend`` isolated in ``namespace``; skips (or fails in CI) when unusable."""
    package, base, port = BACKENDS[backend]
    if importlib.util.find_spec(package) is None:
        unavailable(f"{package} is not installed")
    if base is not None:
        require_reachable(base, port)
    if backend == "tcp":
        base = "tcp://"  # no host, no port: same-host discovery, the default
    elif backend == "sqlite":
        base = f"sqlite:///{tmp_path / 'bus.db'}"
    assert base is not None
    url = f"{base}{'&' if '?' in base else '?'}namespace={namespace}"
    if backend == "redis":
        url += "&aof_warning=false"  # the shared test server keeps nothing on disk, on purpose
    return url


def drop_namespace(url: str) -> None:
    """Remove everything the test's namespace left on its backend (`Bus.drop_namespace`,
    forced: a test's own nodes may still be leaving)."""

    async def drop() -> None:
        bus = await connect(url)
        await bus.drop_namespace(force=True)

    run_strict(drop, 60)


@dataclass(frozen=True)
class Result:
    """What one CLI run printed, and how it exited."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> Result:
        """Assert a zero exit, showing everything the command printed when it was not."""
        assert self.returncode == 0, f"pycomms {' '.join(self.args)} exited {self.returncode}:\n{self}"
        return self

    def __str__(self) -> str:
        return f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


def cli_env(env_url: str | None) -> dict[str, str]:
    """This process's environment for a CLI run: ``$PYCOMMS_URL`` set to ``env_url``, or
    removed, so a developer's own setting cannot leak in."""
    env = {k: v for k, v in os.environ.items() if k != "PYCOMMS_URL"}
    if env_url is not None:
        env["PYCOMMS_URL"] = env_url
    return env


async def start(*args: str, env_url: str | None = None, stdin: bool = False) -> asyncio.subprocess.Process:
    """Start ``pycomms ARGS`` with pipes for stdout and stderr (and stdin if asked)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pycomms",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(env_url),
    )


async def finish(proc: asyncio.subprocess.Process, args: tuple[str, ...], stdin: str | None = None) -> Result:
    """Wait for a started CLI run to end (killing it after `CLI_TIMEOUT`); what it printed."""
    try:
        async with asyncio.timeout(CLI_TIMEOUT * scale()):
            out, err = await proc.communicate(None if stdin is None else stdin.encode())
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        stuck = Result(args, -1, out.decode(), err.decode())
        raise AssertionError(f"pycomms {' '.join(args)} did not finish:\n{stuck}") from None
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
        raise
    return Result(args, proc.returncode or 0, out.decode(), err.decode())


async def pycomms(*args: str, env_url: str | None = None, stdin: str | None = None) -> Result:
    """Run ``pycomms ARGS`` to completion without blocking the event loop; ``env_url``
    sets ``$PYCOMMS_URL`` (instead of ``--url``), ``stdin`` is typed into it."""
    proc = await start(*args, env_url=env_url, stdin=stdin is not None)
    return await finish(proc, args, stdin)
