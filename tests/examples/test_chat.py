"""examples/chat.py as its docstring tells users to run it: two terminals, no URL.

Each chat is a real process with a stdin pipe standing in for the keyboard. The test
waits for what a person would wait for (the other one shown online) before typing, so
it does not depend on timing, only on the chats eventually printing the right lines.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from pycomms.testing import run_strict, scale

CHAT = Path(__file__).resolve().parents[2] / "examples" / "chat.py"
WAIT = 60.0  # seconds (scaled) for one expected line: process start-up on a busy machine included

pytestmark = pytest.mark.timeout(300)


class Chat:
    """One running ``chat.py NAME`` with its stdin, stdout and a transcript."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.transcript: list[str] = []

    @classmethod
    async def start(cls, name: str, env: dict[str, str], cwd: Path) -> Chat:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHAT),
            name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
        return cls(name, proc)

    async def expect(self, text: str) -> str:
        """Read stdout until a line containing ``text``; fail with the transcript if none comes."""
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(WAIT * scale()):
                while line := (await self.proc.stdout.readline()).decode():
                    self.transcript.append(line.rstrip("\n"))
                    if text in line:
                        return line.rstrip("\n")
        except TimeoutError:
            pass
        raise AssertionError(f"{self.name} never printed {text!r}; it printed:\n" + "\n".join(self.transcript))

    async def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n".encode())
        await self.proc.stdin.drain()

    async def finish(self) -> tuple[int, str]:
        """Wait for the process to end; its exit code and stderr."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(WAIT * scale()):
            rest, err = await self.proc.communicate()
        self.transcript.extend(rest.decode().splitlines())
        return self.proc.returncode or 0, err.decode()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.communicate()


def chat_env(tmp_path: Path) -> dict[str, str]:
    """No URL anywhere (so the default ``tcp://``), and a same-host registry of this test's own."""
    env = {k: v for k, v in os.environ.items() if k != "PYCOMMS_URL"}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env["XDG_RUNTIME_DIR"] = str(run_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_two_chats_talk_both_ways_and_leave_cleanly(tmp_path: Path) -> None:
    """Alice and Bob talk; Alice leaves with Ctrl-D and comes back: what Bob said while
    she was away is not kept for her (her chat is an ephemeral service); Bob leaves
    with Ctrl-C."""
    env = chat_env(tmp_path)

    async def scenario() -> None:
        chats: list[Chat] = []
        try:
            alice = await Chat.start("alice", env, tmp_path)
            chats.append(alice)
            await alice.expect("* you are alice")
            bob = await Chat.start("bob", env, tmp_path)
            chats.append(bob)
            await bob.expect("* you are bob; online: alice")
            await alice.expect("* bob joined")

            await bob.type("hello alice")
            assert await alice.expect("hello alice") == "[bob] hello alice"
            await alice.type("hi bob, how are you?")
            assert await bob.expect("how are you") == "[alice] hi bob, how are you?"

            assert alice.proc.stdin is not None
            alice.proc.stdin.close()  # Ctrl-D
            code, err = await alice.finish()
            assert code == 0, err
            assert "* bye" in alice.transcript
            assert "Traceback" not in err, err
            await bob.expect("* alice left")

            await bob.type("anyone there?")
            again = await Chat.start("alice", env, tmp_path)
            chats.append(again)
            await again.expect("* you are alice; online: bob")
            await bob.expect("* alice joined")
            await bob.type("welcome back")
            # had "anyone there?" been kept for alice, it would have come first
            assert await again.expect("[bob]") == "[bob] welcome back", again.transcript

            bob.proc.send_signal(signal.SIGINT)  # Ctrl-C
            code, err = await bob.finish()
            assert code == 0, err
            assert "* bye" in bob.transcript
            assert "Traceback" not in err, err
            await again.expect("* bob left")
            again.proc.send_signal(signal.SIGTERM)
            code, err = await again.finish()
            assert code == 0, err
            # nobody saw their own lines echoed back
            assert not any(line.startswith("[alice]") for line in alice.transcript + again.transcript)
            assert not any(line.startswith("[bob]") for line in bob.transcript)
        finally:
            for chat in chats:
                await chat.kill()

    run_strict(scenario, 240)


def test_a_second_chat_with_a_taken_name_is_refused(tmp_path: Path) -> None:
    """Two ``chat-alice`` instances would split alice's lines between them."""
    env = chat_env(tmp_path)

    async def scenario() -> None:
        first = await Chat.start("alice", env, tmp_path)
        second: Chat | None = None
        try:
            await first.expect("* you are alice")
            second = await Chat.start("alice", env, tmp_path)
            code, err = await second.finish()
            assert code == 1, err
            assert "someone is already chatting as alice" in err
            assert first.proc.stdin is not None
            first.proc.stdin.close()
            code, err = await first.finish()
            assert code == 0, err
        finally:
            await first.kill()
            if second is not None:
                await second.kill()

    run_strict(scenario, 240)
