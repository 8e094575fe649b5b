"""Messages and services of the blocking-API tests (importable by the child processes)."""

from __future__ import annotations

import os

from pycomms import Command, Event, Message, Reject, Request, Service


class Noted(Event):
    n: int


class Job(Command):
    n: int


class Pid(Message):
    pid: int
    n: int


class WhoAmI(Request[Pid]):
    n: int


class Fail(Request[Pid]):
    why: str


def echo_service(name: str = "echo") -> Service:
    """Answers `WhoAmI` with the pid of the process that handled it; `Fail` is rejected."""
    service = Service(name, concurrency=16)

    @service.on
    def who(request: WhoAmI) -> Pid:  # a sync handler: runs in a worker thread
        return Pid(pid=os.getpid(), n=request.n)

    @service.on
    async def fail(request: Fail) -> Pid:
        raise Reject(request.why)

    return service
