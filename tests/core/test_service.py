from __future__ import annotations

import pytest

from pycomms import Command, Context, Event, Message, Request, Retry, Service


class Ping(Event):
    n: int


class Job(Command):
    n: int


class Reply(Message):
    ok: bool


class Ask(Request[Reply]):
    q: str


def test_type_from_annotation() -> None:
    svc = Service("s")

    @svc.on
    async def handle(m: Ping, ctx: Context) -> None: ...

    spec = svc.handlers["Ping"]
    assert (spec.message_type, spec.takes_context, spec.is_async) == (Ping, True, True)


def test_decorator_returns_the_function_unchanged() -> None:
    svc = Service("s")

    async def handle(m: Ping) -> None: ...

    assert svc.on(handle) is handle
    assert svc.on(Job)(handle) is handle


def test_explicit_type_and_sync_handler() -> None:
    svc = Service("s")

    @svc.on(Ask)
    def answer(req, ctx):  # type: ignore[no-untyped-def]
        return Reply(ok=True)

    assert svc.handlers["Ask"].is_async is False
    assert svc.handlers["Ask"].takes_context is True


def test_missing_annotation_names_the_function() -> None:
    svc = Service("s")
    with pytest.raises(TypeError, match="no_annotation"):

        @svc.on
        async def no_annotation(m) -> None: ...  # type: ignore[no-untyped-def]


def test_non_message_type_names_the_function() -> None:
    svc = Service("s")
    with pytest.raises(TypeError, match=r"wrong_type.*not a handleable"):

        @svc.on
        async def wrong_type(m: int) -> None: ...


def test_plain_message_is_not_handleable() -> None:
    svc = Service("s")
    with pytest.raises(TypeError, match="not a handleable"):
        svc.on(Reply)(lambda m: None)


def test_two_handlers_for_one_type() -> None:
    svc = Service("s")

    @svc.on
    async def first(m: Ping) -> None: ...

    with pytest.raises(TypeError, match=r"second.*already handles 'Ping' with .*first"):

        @svc.on
        async def second(m: Ping) -> None: ...


def test_too_many_parameters() -> None:
    svc = Service("s")
    with pytest.raises(TypeError, match="three"):

        @svc.on
        async def three(m: Ping, ctx: Context, extra: int) -> None: ...


def test_unresolvable_annotation_suggests_explicit_type() -> None:
    svc = Service("s")

    class Local(Event):
        pass

    async def handle(m: Local) -> None: ...

    handle.__annotations__["m"] = "Nowhere"
    with pytest.raises(TypeError, match=r"@service.on\(MessageType\)"):
        svc.on(handle)


@pytest.mark.parametrize("name", ["", "has space", "-leading", "x" * 101])
def test_bad_service_names(name: str) -> None:
    with pytest.raises(ValueError, match="service name"):
        Service(name)


def test_bad_concurrency_and_retry() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Service("s", concurrency=0)
    with pytest.raises(TypeError, match="Retry"):
        Service("s", retry={"max_attempts": 3})  # type: ignore[arg-type]
    assert Service("s", retry=Retry(max_attempts=2)).retry.max_attempts == 2


def test_an_ephemeral_service_handles_events_only() -> None:
    svc = Service("tail", ephemeral=True)
    svc.on(Ping)(lambda m: None)
    assert svc.ephemeral
    with pytest.raises(TypeError, match=r"'tail' is ephemeral and handles events only; 'Job' is a command"):
        svc.on(Job)(lambda m: None)
    with pytest.raises(TypeError, match=r"'Ask' is a request"):
        svc.on(Ask)(lambda m: Reply(ok=True))
