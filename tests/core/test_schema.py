from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pycomms
from pycomms._schema import asyncapi, diff, json_schemas

V1 = """
import pycomms

class Price(pycomms.Message):
    cents: int

class GetPrice(pycomms.Request[Price]):
    sku: str

class OrderPlaced(pycomms.Event, name="shop.order_placed"):
    '''An order was placed.'''
    order_id: int
    total: float
    note: str = ""

class Ship(pycomms.Command):
    order_id: int
"""


class Price(pycomms.Message):
    cents: int


class GetPrice(pycomms.Request[Price]):
    sku: str


def test_asyncapi_has_a_channel_message_and_schema_per_type() -> None:
    doc = asyncapi({"GetPrice": GetPrice, "Price": Price}, title="t")
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["GetPrice"]["address"] == "GetPrice"
    assert doc["components"]["schemas"]["GetPrice"]["required"] == ["sku"]
    assert doc["operations"]["handle_GetPrice"]["reply"]["channel"] == {"$ref": "#/channels/Price"}
    assert doc["components"]["messages"]["Price"]["x-pycomms-kind"] == "message"


def _doc(source: str) -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(compile(textwrap.dedent(source), "<schema>", "exec"), namespace)
    types = {v.type_name: v for v in namespace.values() if isinstance(v, type) and issubclass(v, pycomms.Message)}
    types = {k: v for k, v in types.items() if k not in ("Message", "Event", "Command")}
    return json_schemas(types)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('    note: str = ""\n', ""), "shop.order_placed.note: field removed"),
        (("    total: float", "    total: str"), "shop.order_placed.total: type changed from number to string"),
        (
            ("    order_id: int\n    total", "    order_id: int\n    coupon: str\n    total"),
            "coupon: new required field",
        ),
        (("class Ship(pycomms.Command):\n    order_id: int\n", ""), "Ship: message type removed"),
        (("class Ship(pycomms.Command)", "class Ship(pycomms.Event)"), "Ship: kind changed from command to event"),
    ],
)
def test_breaking_changes(change: tuple[str, str], expected: str) -> None:
    breaking, _ = diff(_doc(V1), _doc(V1.replace(*change)))
    assert any(expected in line for line in breaking), breaking


def test_compatible_changes() -> None:
    v2 = (
        V1.replace('    note: str = ""\n', '    note: str = ""\n    gift: bool = False\n')
        + "\nclass New(pycomms.Event):\n    x: int\n"
    )
    breaking, compatible = diff(_doc(V1), _doc(v2))
    assert breaking == []
    assert set(compatible) == {"shop.order_placed.gift: optional field added", "New: message type added"}


def test_cli_schema_and_diff_exit_codes(tmp_path: Path) -> None:
    v1, v2 = tmp_path / "v1.py", tmp_path / "v2.py"
    v1.write_text(V1)
    v2.write_text(V1.replace("    total: float", "    total: str"))
    cli = [sys.executable, "-m", "pycomms", "schema"]
    out = subprocess.run([*cli, str(v1), "--format", "json"], capture_output=True, text=True, check=True).stdout
    (tmp_path / "v1.json").write_text(out)
    assert set(json.loads(out)["messages"]) == {"GetPrice", "Price", "shop.order_placed", "Ship"}
    same = subprocess.run([*cli, "diff", str(tmp_path / "v1.json"), str(v1)], capture_output=True, text=True)
    assert same.returncode == 0, same.stderr
    changed = subprocess.run([*cli, "diff", str(v1), str(v2)], capture_output=True, text=True)
    assert changed.returncode == 1
    assert "BREAKING  shop.order_placed.total: type changed" in changed.stdout
    api = json.loads(subprocess.run([*cli, str(v1)], capture_output=True, text=True, check=True).stdout)
    assert api["asyncapi"] == "3.0.0"
