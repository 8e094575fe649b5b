"""docs/status.md shows the capability matrix the installed transports declare."""

from __future__ import annotations

import re
from pathlib import Path

from pycomms._cli import capability_matrix
from pycomms._plugins import plugin_manager

ROOT = Path(__file__).resolve().parents[2]
STATUS = ROOT / "docs" / "status.md"


def test_capability_matrix_in_the_docs_is_the_declared_one() -> None:
    """The table lists this repository's distributions only: another installed plugin
    (examples/backend_plugin, once installed as its README says) is not in it."""
    infos = sorted(
        (
            info
            for infos in plugin_manager().hook.pycomms_schemes()
            for info in infos
            if (ROOT / info.distribution.replace("-", "_")).is_dir()
        ),
        key=lambda i: i.scheme,
    )
    match = re.search(r"<!-- capabilities -->\n(.*?)\n<!-- /capabilities -->", STATUS.read_text(), re.S)
    assert match, "docs/status.md lost its capability markers"
    assert match.group(1).strip() == capability_matrix(infos).strip(), (
        "regenerate the table with: pycomms backends --capabilities"
    )
