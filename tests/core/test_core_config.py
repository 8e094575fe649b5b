from __future__ import annotations

from pathlib import Path

import pytest

import pycomms
from pycomms import BackendNotFound, ConfigError
from pycomms._config import DEFAULT_URL, backend_config, resolve_url
from pycomms._plugins import KNOWN_DISTRIBUTIONS


def test_argument_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYCOMMS_URL", "memory://env")
    assert resolve_url("memory://arg") == "memory://arg"


def test_env_then_files_then_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PYCOMMS_URL", raising=False)
    assert resolve_url(None, cwd=tmp_path) == DEFAULT_URL
    (tmp_path / "pyproject.toml").write_text('[tool.pycomms]\nurl = "memory://pyproject"\n')
    assert resolve_url(None, cwd=tmp_path) == "memory://pyproject"
    (tmp_path / "pycomms.toml").write_text('url = "memory://toml"\n')
    assert resolve_url(None, cwd=tmp_path) == "memory://toml"
    monkeypatch.setenv("PYCOMMS_URL", "memory://env")
    assert resolve_url(None, cwd=tmp_path) == "memory://env"


def test_bad_toml_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PYCOMMS_URL", raising=False)
    (tmp_path / "pycomms.toml").write_text("url = [")
    with pytest.raises(ConfigError, match=r"pycomms\.toml"):
        resolve_url(None, cwd=tmp_path)


def test_core_options_are_split_from_backend_options() -> None:
    config = backend_config("redis://u:pw@h:1/0?namespace=ns1&socket_timeout=5", {"max_message_size": 2048, "x": 1})
    assert config.namespace == "ns1"
    assert config.max_message_size == 2048
    assert config.options == {"socket_timeout": "5", "x": 1}
    assert config.scheme == "redis"
    assert "namespace" not in config.url
    assert "pw" not in config.redacted_url


def test_driver_suffix_is_not_part_of_the_scheme() -> None:
    assert backend_config("postgresql+asyncpg://h/db", {}).scheme == "postgresql"


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("memory://x?namespace=bad ns", {}, "namespace 'bad ns'"),
        ("memory://x", {"max_message_size": "big"}, "max_message_size"),
        ("memory://x?a=1&a=2", {}, "'a' is given twice"),
        ("nothing", {}, "no scheme"),
    ],
)
def test_bad_config(url: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        backend_config(url, options)


def test_unknown_option_of_memory_backend() -> None:
    with pytest.raises(ConfigError, match="colour"):
        pycomms.connect("memory://x?colour=blue")


def test_backend_not_found_names_the_scheme_and_what_is_installed() -> None:
    with pytest.raises(BackendNotFound) as info:
        pycomms.connect("kafka://:hunter2@localhost")
    assert "'kafka'" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert "memory" in str(info.value)


def test_backend_not_found_names_the_distribution_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KNOWN_DISTRIBUTIONS, "kafka", "pycomms-kafka")
    with pytest.raises(BackendNotFound, match="pip install pycomms-kafka"):
        pycomms.connect("kafka://localhost")
