"""The skeleton third-party backend in examples/backend_plugin passes the conformance kit.

It is tested without being installed: its ``src`` goes on ``sys.path`` and the plugin
module is registered with the core's plugin manager, which is what the ``pycomms``
entry point does once the distribution is installed (``pip install -e
examples/backend_plugin``). A test below checks that the entry point names that module.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import pycomms
from pycomms._cli import main as cli_main
from pycomms._plugins import plugin_manager
from pycomms.testing import ConformanceSuite, run_strict

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "examples" / "backend_plugin"
sys.path.insert(0, str(PLUGIN_DIR / "src"))

import pycomms_example_backend  # noqa: E402 - importable only once its src is on sys.path
from pycomms_example_backend import plugin  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _registered() -> Iterator[None]:
    """Register the plugin as its entry point would (unless it is installed, and so already is)."""
    pm = plugin_manager()
    if pm.is_registered(plugin):
        yield
        return
    pm.register(plugin, name="pycomms-example-backend")
    try:
        yield
    finally:
        pm.unregister(plugin)


class TestExampleBackend(ConformanceSuite):
    """Every scenario of the kit; capabilities as declared in its ``_transport.py``."""

    redelivery_timeout = 5.0  # a closed receiver hands its messages back at once

    def make_url(self, namespace: str) -> str:
        return f"example://kit?namespace={namespace}"


def test_entry_point_names_the_plugin_module() -> None:
    project = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["pycomms"] == {"example": plugin.__name__}
    assert project["name"] == "pycomms-example-backend"
    [info] = plugin.pycomms_schemes()
    assert (info.scheme, info.distribution) == ("example", project["name"])
    assert info.capabilities == pycomms_example_backend.CAPABILITIES


def test_pycomms_backends_lists_it(capsys: pytest.CaptureFixture[str]) -> None:
    """In-process: a subprocess would only see it once installed (see the module docstring)."""
    assert cli_main(["backends"]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("example://")]
    assert "pycomms-example-backend" in line
    assert "a teaching example" in line
    assert cli_main(["backends", "--capabilities"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if "`example://`" in line]
    assert row == "| `example://` | pycomms-example-backend | yes | no | yes | yes | no | no | no |"


def test_pycomms_backends_keeps_columns_apart(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["backends"]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("example://")]
    assert re.match(r"example://\s+pycomms-example-backend\s+a teaching example", line), line


def test_declares_what_it_cannot_do() -> None:
    caps = pycomms_example_backend.CAPABILITIES
    assert not caps.cross_process
    assert not caps.presence
    assert not caps.persistent


def test_unknown_option_fails_at_connect_naming_it() -> None:
    with pytest.raises(pycomms.ConfigError, match="visibility_timeout"):
        pycomms.connect("example://kit?visibility_timeout=3")


class Hello(pycomms.Event, name="example.test.hello"):
    text: str


def test_stores_are_separate_per_name() -> None:
    """``example://a`` and ``example://b`` are two brokers, like two Redis servers."""
    seen: list[str] = []
    service = pycomms.Service("where")

    @service.on
    async def hello(event: Hello) -> None:
        seen.append(event.text)

    async def scenario() -> None:
        async with (
            pycomms.connect("example://a?namespace=names", services=[service]) as a,
            pycomms.connect("example://b?namespace=names") as b,
        ):
            await b.publish(Hello(text="to b"))
            await a.publish(Hello(text="to a"))
            while not seen:  # noqa: ASYNC110 - polling a list the handler appends to
                await asyncio.sleep(0.01)
            assert {n.id for n in await a.nodes()} == {a.node.id}
        assert seen == ["to a"]  # "to b" went to store b, where nobody handles Hello

    run_strict(scenario, 30)
