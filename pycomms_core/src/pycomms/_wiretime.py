"""RFC 3339 timestamps for the CloudEvents ``time`` attribute, fast for the common case.

Messages sent in the same second share their ``YYYY-MM-DDTHH:MM:SS`` part, so both
directions keep the last second they converted and only format or parse the fraction.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d{1,9})?(?:([Zz])|([+-])(\d\d):(\d\d))")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TENS: list[int] = [10**n for n in range(10)]

_second: tuple[int, str] = (-1, "")  # (UNIX second, its "YYYY-MM-DDTHH:MM:SS"); each tuple replaced whole
_formatted: tuple[int, str] = (-1, "")  # (UNIX millisecond, its timestamp)
_parsed: tuple[str, float] = ("", 0.0)  # (timestamp, its UNIX seconds)
_parsed_second: tuple[str, int] = ("", 0)  # ("YYYY-MM-DDTHH:MM:SS", its UNIX second)


def format_time(when: float) -> str:
    """``when`` (UNIX seconds, not negative) as RFC 3339 in UTC with milliseconds, the
    precision of JavaScript's ``Date`` and of most CloudEvents SDKs."""
    global _second, _formatted
    # Truncated to the millisecond, after 1 µs is added: a parsed ".187" is the float
    # nearest to it, which may lie just below (268435456.187 * 1000 is 268435456186.99998),
    # and must format as ".187" again, not ".186".
    milli = int(when * 1000 + 0.001)
    last = _formatted
    if last[0] == milli:  # a burst sends many messages within one millisecond
        return last[1]
    second = milli // 1000
    prefix = _second
    if prefix[0] != second:
        prefix = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    text = f"{prefix[1]}.{milli % 1000:03d}Z"
    _formatted = (milli, text)
    return text


def parse_time(text: str) -> float:
    """UNIX seconds of an RFC 3339 timestamp. Raises `ValueError` saying what is wrong."""
    global _parsed, _parsed_second
    last = _parsed
    if last[0] == text:
        return last[1]
    if 21 < len(text) <= 30 and text[19] == "." and text[-1] == "Z" and text.isascii() and text[20:-1].isdigit():
        second = _parsed_second
        if second[0] != text[:19]:
            second = _parsed_second = (text[:19], int(_parse(text[:19] + "Z")))
        digits = text[20:-1]
        when = second[1] + int(digits) / _TENS[len(digits)]  # as exact as float("0." + digits): one rounding
    else:
        when = _parse(text)
    _parsed = (text, when)
    return when


def _parse(text: str) -> float:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"must be an RFC 3339 timestamp such as '2026-12-06T20:40:27.123456Z', got {text!r}")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        stamp = datetime(int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59), tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"must be an RFC 3339 timestamp, got {text!r}: {exc}") from None
    seconds = (stamp - _EPOCH).total_seconds()
    if not zulu:
        offset = timedelta(hours=int(off_h), minutes=int(off_m)).total_seconds()
        seconds -= offset if sign == "+" else -offset
    return seconds + (float("0" + fraction) if fraction else 0.0)
