"""What every property of the fuzz suite shares: its settings, its case counter, and the
strategies of hostile input.

- Every property runs ``CMAN_FUZZ_EXAMPLES`` generated cases (default 1000, what CI runs).
- Runs are derandomized by default, so CI sees the same cases every time and a failure
  reproduces. ``CMAN_FUZZ_SEED=N`` explores other cases, reproducibly with the same N; the
  session summary (tests/fuzz/conftest.py) says which, and prints the cases tried.
- A property "either returns a value that keeps its invariants or raises a UsageError":
  :func:`usage_or` runs the call and fails on any other exception.
"""

from __future__ import annotations

import functools
import os
import string
import unicodedata
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from cman.errors import UsageError

EXAMPLES = int(os.environ.get("CMAN_FUZZ_EXAMPLES", "1000"))
SEED = os.environ.get("CMAN_FUZZ_SEED")

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=SEED is None,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

COUNTS: Counter[str] = Counter()
"""Cases tried per property (shrinking included), keyed by the property's name."""
MINIMUM: dict[str, int] = {}
"""Cases each property must try before the session may pass."""
EXIT_CODES: Counter[int] = Counter()
"""Exit codes the CLI fuzzer saw, for the summary."""

F = TypeVar("F", bound=Callable[..., Any])
_T = TypeVar("_T")


def counted(func: F) -> F:
    """Count the cases a property tries; put it under ``@given``."""
    key = func.__name__
    MINIMUM[key] = EXAMPLES

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        COUNTS[key] += 1
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


class Refused:
    """The call raised a UsageError (the only other outcome a validator may have)."""

    def __init__(self, err: UsageError) -> None:
        self.err = err

    def __repr__(self) -> str:
        return f"Refused({self.err})"


def usage_or(call: Callable[[], _T]) -> _T | Refused:
    """The call's value, or Refused; any exception but a UsageError fails the property.

    The refusal must print as the CLI prints it: one line, no control characters (a newline
    or an escape sequence taken from the input would forge lines on the user's terminal)."""
    try:
        return call()
    except UsageError as err:
        assert one_line(str(err)), f"the error message carries control characters: {str(err)!r}"
        return Refused(err)


def one_line(text: str) -> bool:
    """No control character but tab: what may go into one line of stderr or of a config file."""
    return not any(unicodedata.category(c) == "Cc" and c != "\t" for c in text)


# -- strategies -----------------------------------------------------------------------------

TOKEN_GROUPS: tuple[tuple[str, ...], ...] = (
    # line and field breakers
    ("\n", "\r", "\r\n", "\x00", "\t", " ", "\x0b", "\x0c", "\x1b[2J", "\x7f", "\x85", "\u2028"),
    # options, paths and URL syntax
    ("-", "--", "-x", "--help", ".", "..", "/", "../", "/..", "../../etc/passwd", "./", "//", "%", "%2e%2e",
     "%0a", "?", "#", "&", "=", ":", "@", ";", "\\", "*", "~"),
    # quoting and shell syntax (never reaches a shell, but must not confuse a parser either)
    ("'", '"', "`", "$(id)", "${IFS}", "$", "!", "|", "<", ">", "{", "}", "[", "]", ","),
    # unicode: letters, digits and spaces Python treats as such, invisibles, lone surrogates
    # (what undecodable argv bytes become), emoji, fullwidth
    ("\u00e9", "\u00df", "\u0130", "\u0661\u0662\u0663", "\u00b2", "\u0663", "\u216b", "\U0001d7d9",
     "\uff46\uff55\uff4c\uff4c", "\u00a0", "\u3000", "\ufeff", "\u200b", "\udcff", "\U0001f433"),
    # numbers at the edges
    ("0", "-1", "9" * 400, "1e309", "1e-12", "nan", "inf", "-inf", "1_0", "0x10", "+1", "0.0000001", "4294967296",
     "18446744073709551616", "99999999999t"),
    # lengths and names of cman's own
    ("a" * 300, "a" * 64, "a" * 65, "a" * 256, "localhost", "127.0.0.1", "::1", "fe80::1%eth0", "cman.",
     "user.cman.", "cman.managed", "sha256:", "latest", "lxc.hook.pre-start", "lxc.", "=x", "none"),
)
"""Pieces that have broken parsers before. Drawn group first, so a line break is as likely
as any unicode oddity however long each list grows."""

HOSTILE_TOKENS = tuple(t for group in TOKEN_GROUPS for t in group)


def token() -> st.SearchStrategy[str]:
    """One hostile piece; line breakers weigh as much as all other groups together."""
    return st.one_of(st.sampled_from(TOKEN_GROUPS[0]), st.sampled_from(TOKEN_GROUPS).flatmap(st.sampled_from))


ASCII_PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "


def hostile_text(*, alphabet: str | None = None, max_size: int = 40) -> st.SearchStrategy[str]:
    """Strings mixing hostile tokens, arbitrary unicode and plausible ASCII."""
    piece = st.one_of(
        token(),
        st.text(max_size=8),
        st.text(alphabet=alphabet or ASCII_PRINTABLE, max_size=max_size),
    )
    return st.one_of(
        token(),
        st.text(alphabet=alphabet or ASCII_PRINTABLE, max_size=max_size),
        st.lists(piece, max_size=5).map("".join),
        st.text(max_size=max_size),
    )


def mutated(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid values, and valid values with a hostile token put before, after or inside."""

    @st.composite
    def one(draw: st.DrawFn) -> str:
        base = draw(valid)
        how = draw(st.sampled_from(("as is", "before", "after", "inside", "case")))
        if how == "as is":
            return base
        if how == "case":
            return base.swapcase()
        bad = draw(token())
        if how == "before":
            return bad + base
        if how == "after":
            return base + bad
        at = draw(st.integers(0, len(base)))
        return base[:at] + bad + base[at:]

    return one()


def values(valid: st.SearchStrategy[str], **kw: Any) -> st.SearchStrategy[str]:
    """What a property feeds a validator: valid, mutated and hostile values."""
    return st.one_of(valid, mutated(valid), hostile_text(**kw))
