"""Credentials on ``nats://``: user/password in the URL, a token (URL or option), an NKey
seed file (``nkeys_seed=``) and a ``.creds`` file (``user_credentials=``: operator mode,
JWTs made by nats_keys.py since ``nsc`` is not on these machines); a refused login is a
`ConnectError` naming the server, never the secret, and a seed shows in no error and no
log line."""

from __future__ import annotations

import logging
from pathlib import Path

import nkeys
import pytest
from nats_keys import Operator, new_key, nkey_user_config, seed, write_seed
from nats_support import PrivateNats

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, run_strict

pytestmark = [pytest.mark.timeout(120)]


class Hello(Event, name="natsauth.hello"):
    n: int


async def round_trip(url: str) -> None:
    rec = Recorder()
    svc = Service("auth")

    @svc.on
    async def hello(m: Hello) -> None:
        rec.add(m.n)

    async with pycomms.connect(url, services=[svc]) as bus:
        await bus.publish(Hello(n=1))
        await rec.wait(1, 10)


def test_user_and_password(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path, extra=("--user", "alice", "--pass", "wonder-pw"))
    server.start()
    try:
        run_strict(lambda: round_trip(f"nats://alice:wonder-pw@{server.address}?namespace=auth"), 30)

        async def refused() -> None:
            with pytest.raises(pycomms.ConnectError) as caught:
                await pycomms.connect(f"nats://alice:wrong-pw@{server.address}?namespace=auth&connect_timeout=3")
            text = str(caught.value)
            assert text.startswith(f"nats: connect to {server.address} refused: ")
            # the server answers -ERR 'Authorization Violation' and closes at once; when its
            # reset reaches our socket before we read the answer, the kernel drops the answer
            assert "Authorization Violation" in text or "Connection reset" in text, text
            assert "wrong-pw" not in text
            assert "wonder-pw" not in text

        run_strict(refused, 30)
    finally:
        server.stop()


def test_token_in_the_url_or_as_an_option(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path, extra=("--auth", "t0ken-value"))
    server.start()
    try:
        run_strict(lambda: round_trip(f"nats://t0ken-value@{server.address}?namespace=auth"), 30)
        run_strict(lambda: round_trip(f"nats://{server.address}?namespace=auth&token=t0ken-value"), 30)

        async def refused() -> None:
            with pytest.raises(pycomms.ConnectError) as caught:
                await pycomms.connect(f"nats://{server.address}?namespace=auth&token=bad-t0ken&connect_timeout=3")
            assert "bad-t0ken" not in str(caught.value)

        run_strict(refused, 30)
    finally:
        server.stop()


def _refused_without_secrets(url: str, secrets: list[str], caplog: pytest.LogCaptureFixture) -> None:
    """connect(url) is refused at once, and neither the error, its causes nor any log line shows a secret."""

    async def refused() -> None:
        with pytest.raises(pycomms.ConnectError) as caught:
            await pycomms.connect(url)
        text = str(caught.value)
        assert " refused: " in text, text
        assert "Authorization Violation" in text or "Connection reset" in text, text  # see test_user_and_password
        seen: BaseException | None = caught.value
        while seen is not None:
            assert not any(secret in str(seen) for secret in secrets), repr(seen)
            seen = seen.__cause__ or seen.__context__

    run_strict(refused, 30)
    assert caplog.records, "the refused login is logged"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert not any(secret in logged for secret in secrets)


def test_nkey_seed_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user, stranger = new_key(nkeys.PREFIX_BYTE_USER), new_key(nkeys.PREFIX_BYTE_USER)
    server = PrivateNats(tmp_path, extra=("-c", str(nkey_user_config(tmp_path / "server.conf", user))))
    server.start()
    try:
        seed_file = write_seed(tmp_path / "user.nk", user)
        run_strict(lambda: round_trip(f"nats://{server.address}?namespace=auth&nkeys_seed={seed_file}"), 30)
        wrong = write_seed(tmp_path / "stranger.nk", stranger)
        url = f"nats://{server.address}?namespace=auth&nkeys_seed={wrong}&connect_timeout=3"
        _refused_without_secrets(url, [seed(user), seed(stranger)], caplog)
    finally:
        server.stop()


def test_creds_file_in_operator_mode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    operator = Operator.new()
    server = PrivateNats(tmp_path, extra=("-c", str(operator.config(tmp_path / "server.conf"))))
    server.start()
    try:
        user = new_key(nkeys.PREFIX_BYTE_USER)
        creds = operator.creds(tmp_path / "user.creds", user)
        run_strict(lambda: round_trip(f"nats://{server.address}?namespace=auth&user_credentials={creds}"), 30)
        # a user signed by an account the server does not know
        intruder, rogue = new_key(nkeys.PREFIX_BYTE_USER), new_key(nkeys.PREFIX_BYTE_ACCOUNT)
        forged = operator.creds(tmp_path / "forged.creds", intruder, signer=rogue)
        url = f"nats://{server.address}?namespace=auth&user_credentials={forged}&connect_timeout=3"
        _refused_without_secrets(url, [seed(user), seed(intruder), seed(rogue)], caplog)
    finally:
        server.stop()


def test_key_files_are_checked_at_connect_without_showing_a_seed(tmp_path: Path) -> None:
    """A missing, unreadable or wrong key file is a ConfigError naming the option, raised
    before any connection; a seed given where its file's path belongs is not echoed."""
    user = new_key(nkeys.PREFIX_BYTE_USER)
    not_a_seed = tmp_path / "notes.txt"
    not_a_seed.write_text("hello\n")
    cases = {
        f"nkeys_seed={tmp_path / 'missing.nk'}": ("'nkeys_seed'", "cannot read", "missing.nk"),
        f"nkeys_seed={not_a_seed}": ("'nkeys_seed'", "does not hold an NKey user seed"),
        f"nkeys_seed={seed(user)}": ("'nkeys_seed'", "looks like a seed"),
        f"user_credentials={tmp_path / 'missing.creds'}": ("'user_credentials'", "cannot read", "missing.creds"),
        f"user_credentials={write_seed(tmp_path / 'seed-only.nk', user)}": (
            "'user_credentials'",
            "is not a NATS credentials file",
        ),
    }

    async def check() -> None:
        for option, expected in cases.items():
            with pytest.raises(pycomms.ConfigError) as caught:
                await pycomms.connect(f"nats://127.0.0.1:1?namespace=auth&{option}")
            text = str(caught.value)
            assert all(part in text for part in expected), (option, text)
            assert seed(user) not in text, text

    run_strict(check, 30)
