"""What a backend uses at its boundary: options in (`parse_options`), errors out
(`map_errors`, `describe_error`), URLs shown without secrets (`redact_url`). Public
through `pycomms.spi`."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from . import _errors

_SECRET_OPTIONS = frozenset({"secret", "password", "token", "tls_key"})
_CREDENTIALS = re.compile(r"(//[^/@\s:]*:)[^/@\s]*@")

_Options = TypeVar("_Options", bound=BaseModel)


def parse_options(
    model: type[_Options],
    options: Mapping[str, Any],
    *,
    backend: str,
    renamed: Mapping[str, str] | None = None,
    secret: Collection[str] = (),
    hints: Mapping[str, str] | None = None,
) -> _Options:
    """Validate a backend's ``options`` with its pydantic ``model`` (which should
    forbid extra fields) and return it; anything wrong is one `ConfigError` naming each
    bad option, what was given (``***`` for a secret) and the accepted options, e.g.
    ``redis: option 'block': Input should be greater than 0 (got '-1'). Accepted
    options: block, connect_timeout, ...``.

    ``renamed`` maps an old option name to its successor: the old one is accepted with
    a warning in the log, both together are refused. ``secret`` names options whose
    value is never shown, besides those `redact_url` hides (``password``, ``secret``,
    ``token``, ``tls_key``). ``hints`` says what each option accepts, in words
    (``"seconds 0.1..300"``), added to its error as ``expected ...``."""
    given = dict(options)
    given_as: dict[str, str] = {}
    hidden = _SECRET_OPTIONS | frozenset(secret)
    for old, new in (renamed or {}).items():
        if old not in given:
            continue
        if new in given:
            raise _errors.ConfigError(
                f"{backend}: options {old!r} and {new!r} both given; {old!r} is the old name of {new!r}"
            )
        value = "***" if new in hidden else given[old]
        logging.getLogger("pycomms").warning("%s option %r is deprecated; use %s=%s instead", backend, old, new, value)
        given[new] = given.pop(old)
        given_as[new] = old
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        accepted = ", ".join(sorted(model.model_fields))
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "options"
            label = f"{name!r} (given as {given_as[name]!r})" if name in given_as else repr(name)
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown option {label}")
            elif error["loc"]:
                shown = "***" if name in hidden else repr(error.get("input"))
                hint = f"; expected {hints[name]}" if hints and name in hints else ""
                problems.append(f"option {label}: {error['msg']} (got {shown}){hint}")
            else:
                problems.append(error["msg"].removeprefix("Value error, "))
        raise _errors.ConfigError(f"{backend}: {'; '.join(problems)}. Accepted options: {accepted}") from None


def describe_error(exc: BaseException) -> str:
    """``exc`` in one line for an error message: its type and the first line of its
    text, any ``scheme://user:password@`` in it masked, at most 500 characters."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else "no details"
    return _CREDENTIALS.sub(r"\1***@", f"{type(exc).__name__}: {first}")[:500]


@contextmanager
def map_errors(
    error: type[_errors.PyCommsError],
    what: str,
    *,
    catch: tuple[type[BaseException], ...] = (Exception,),
    describe: Callable[[BaseException], str] = describe_error,
    chain: bool = True,
) -> Iterator[None]:
    """Translate a driver's error at the boundary: inside the block, an exception of
    ``catch`` becomes ``error(f"{what} failed: {describe(exc)}")``, raised from it (or,
    with ``chain=False``, from None: a connection failure should read as one line).
    PyComms errors and cancellation pass through. ``what`` names the backend, the host
    and the operation, e.g. ``"amqp: declaring queue 'x' on 127.0.0.1:5672"``."""
    try:
        yield
    except _errors.PyCommsError:
        raise
    except catch as exc:
        if chain:
            raise error(f"{what} failed: {describe(exc)}") from exc
        raise error(f"{what} failed: {describe(exc)}") from None


def redact_url(url: str) -> str:
    """``url`` with any password (and ``secret`` option) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    head, _, rest = url.partition("://")
    if "@" in parts.netloc:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if sep else ''}@{hostport}"
        rest = netloc + rest[len(parts.netloc) :]
    base, qmark, query = f"{head}://{rest}".partition("?")
    query, hash_, fragment = query.partition("#")
    query = "&".join(
        f"{k}=***" if k.lower() in _SECRET_OPTIONS else f"{k}={v}" if sep else k
        for k, sep, v in (item.partition("=") for item in query.split("&") if item)
    )
    return f"{base}{qmark if query else ''}{query}{hash_}{fragment}"
