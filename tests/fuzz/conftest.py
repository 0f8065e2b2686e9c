"""Bookkeeping of the property-based fuzz suite: the cases tried, printed at the end.

A property that passed with fewer cases than asked fails the session: a strategy that
rejects almost everything would otherwise test almost nothing, silently.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from ._fuzz import COUNTS, EXAMPLES, EXIT_CODES, MINIMUM, SEED

PASSED: set[str] = set()
STARTED = time.monotonic()
_SHORT = pytest.StashKey[dict[str, tuple[int, int]]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SEED is None:
        return
    from hypothesis import seed

    for item in items:
        if isinstance(item, pytest.Function) and hasattr(item.obj, "hypothesis"):
            seed(int(SEED))(item.obj)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        PASSED.add(report.nodeid.rpartition("::")[2].partition("[")[0])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    short = {k: (COUNTS[k], need) for k, need in MINIMUM.items() if k in PASSED and COUNTS[k] < need}
    session.config.stash[_SHORT] = short
    if short and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not COUNTS:
        return
    tr = terminalreporter
    mode = f"seed {SEED}" if SEED is not None else "derandomized"
    tr.section(f"fuzz: cases tried per property ({mode}, {EXAMPLES} asked of each)")
    width = max(len(k) for k in COUNTS)
    for key in sorted(COUNTS):
        tr.write_line(f"{key.ljust(width)}  {COUNTS[key]:>7}")
    tr.write_line(f"{'total'.ljust(width)}  {sum(COUNTS.values()):>7} cases, {len(COUNTS)} properties, "
                  f"{time.monotonic() - STARTED:.1f} s")
    if EXIT_CODES:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(EXIT_CODES.items()))
        tr.write_line(f"CLI fuzzer exit codes (code: cases): {codes}")
    for key, (got, need) in sorted(config.stash.get(_SHORT, {}).items()):
        tr.write_line(f"FAILED: {key} tried only {got} cases of the {need} asked")
