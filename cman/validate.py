"""Parsing and validation of user input, shared by the CLI and the library.

Everything here runs before any engine call, raises a UsageError subclass that
names the field, and has unit tests (tests/unit/test_validate.py).

Patterns are always applied with ``fullmatch``: ``re.match`` with a ``$`` anchor accepts
a trailing newline (``$`` matches before a final ``\n``), so ``FOO\n=x`` would pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from .errors import InvalidName, InvalidValue

_SIZE = re.compile(r"(\d{1,30}(?:\.\d{1,30})?)\s*([bkmgt]?)(?:i?b)?", re.IGNORECASE | re.ASCII)
MAX_BYTES = 2**63 - 1
"""No engine takes a size above a signed 64-bit byte count."""
MIN_CPUS = 0.01
"""Docker's smallest quota (NanoCpus 1e7); below it NanoCpus rounds to 0, which means "no limit"."""
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*")


def parse_size(text: str, field: str = "--memory") -> int:
    """Docker's size syntax: 512m, 1g, 1.5G, 1048576 (bytes); binary units."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise InvalidValue(field, text, "use a number with an optional unit b, k, m, g or t (e.g. 512m)")
    from decimal import Decimal

    value = int(Decimal(m.group(1)) * _UNITS[m.group(2).lower()])  # exact: no float rounding
    if value <= 0:
        raise InvalidValue(field, text, "must be greater than zero")
    if value > MAX_BYTES:
        raise InvalidValue(field, text, "is larger than any engine takes (at most 8 EiB)")
    return value


def parse_cpus(text: str | float, field: str = "--cpus") -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InvalidValue(field, text, "use a decimal number of CPUs such as 0.5 or 2") from None
    if not (MIN_CPUS <= value <= 1024):  # also refuses nan and inf
        raise InvalidValue(field, text, f"must be between {MIN_CPUS} and 1024")
    return value


def check_config_value(field: str, value: str, *, allow_empty: bool = False) -> str:
    """Values written into engine config files: no newlines, no NUL, no leading '-'."""
    if not value and not allow_empty:
        raise InvalidValue(field, value, "must not be empty")
    if any(c in value for c in "\n\r\0"):
        raise InvalidValue(field, value, "must not contain newlines or NUL bytes")
    if value.startswith("-"):
        raise InvalidValue(field, value, "must not start with '-'")
    return value


def parse_kv(pairs: Iterable[str], field: str, *, key_re: re.Pattern[str] = _ENV_KEY) -> dict[str, str]:
    """``K=V`` pairs (``-e``, ``--label``) into a dict; the value may be empty."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidValue(field, pair, "expected KEY=VALUE")
        if not key_re.fullmatch(key):
            raise InvalidValue(field, pair, f"bad key {key!r}")
        if any(c in value for c in "\0"):
            raise InvalidValue(field, pair, "value must not contain NUL bytes")
        out[key] = value
    return out


def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    return parse_kv(pairs, "-e/--env")


def parse_labels(pairs: Iterable[str]) -> dict[str, str]:
    labels = parse_kv(pairs, "--label", key_re=_LABEL_KEY)
    check_user_labels(labels)
    return labels


def check_user_labels(labels: Mapping[str, str]) -> None:
    """A user's labels: a valid key, no newline in the value, and nothing in cman's namespace.

    ``cman.*`` (``user.cman.*`` as LXD spells it) are cman's own keys (``cman.managed``,
    ``cman.run``, ...): a user label there could make cman misjudge a container. Compared
    without case, so ``CMAN.managed`` is refused too.
    """
    from .models import RESERVED_LABEL_PREFIXES  # models is not light; parse_interval needs none of it

    for key, value in labels.items():
        pair = f"{key}={value}"
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise InvalidValue("--label", pair, f"bad key {key!r}")
        if key.lower().startswith(RESERVED_LABEL_PREFIXES):
            raise InvalidValue("--label", pair, f"the {' and '.join(RESERVED_LABEL_PREFIXES)} namespaces are cman's own;"
                               " choose another key")
        if "\n" in value or "\r" in value or "\0" in value:
            raise InvalidValue("--label", pair, "value must not contain newlines or NUL bytes")


def split_ref(ref: str, backends: Iterable[str]) -> tuple[str | None, str]:
    """``docker:web`` -> ("docker", "web"); ``web`` -> (None, "web").

    Only a known backend name counts as a prefix, so image-like refs such as
    ``host:5000/x`` are not misread.
    """
    head, sep, tail = ref.partition(":")
    if sep and head in set(backends):
        if not tail:
            raise InvalidName(f"empty container name in {ref!r}", hint="write BACKEND:NAME")
        return head, tail
    return None, ref


def check_name(name: str, pattern: re.Pattern[str], max_len: int, rules: str, what: str = "container name") -> str:
    """Common shape of the per-engine name checks."""
    if not name or len(name) > max_len or not pattern.fullmatch(name):
        raise InvalidName(f"invalid {what} {name!r}", hint=rules)
    return name


def parse_interval(text: str | float, field_name: str = "--interval") -> float:
    """Seconds between samples: a finite number greater than 0."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InvalidValue(field_name, text, "use a number of seconds greater than 0, e.g. 1 or 0.5") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidValue(field_name, text, "must be a number of seconds greater than 0")
    return value
