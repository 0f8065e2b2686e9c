"""Timestamps as engines write them, into ``datetime``; and durations for humans.

Docker and LXD write RFC 3339 with nanoseconds (``2024-05-01T10:00:00.123456789Z``),
which ``datetime.fromisoformat`` refuses before Python 3.11's wider parser and
still cannot hold (microseconds only); Go's zero time (``0001-01-01T00:00:00Z``)
means "never"; Docker's listing gives seconds since the epoch. Unknown is ``None``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: object) -> datetime | None:
    """An engine's timestamp (RFC 3339 text, or epoch seconds) as an aware datetime; None if unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value, tz=UTC) if value > 0 else None
        except (ValueError, OverflowError, OSError):  # beyond year 9999: not a real time
            return None
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def now_iso() -> str:
    """The current time in UTC, as cman writes it into its own records."""
    return datetime.now(UTC).isoformat()


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """``"3 minutes"``, ``"1 hour"``, ``"12 seconds"``: the time since ``when`` ("" when unknown)."""
    if when is None:
        return ""
    secs = max(0, int(((now or datetime.now(UTC)) - when).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= size:
            n = secs // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{secs} second{'s' if secs != 1 else ''}"
