"""The monitor's listing thread: it asks the engines again only when the cgroups show a
change, when a pass pokes it, or every FULL_EVERY seconds (a fake collector counts listings)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cman.monitor.lister import Lister


class Counting:
    def __init__(self) -> None:
        self.listings = 0

    def discover(self) -> tuple[list[object], list[str], dict[str, str]]:
        self.listings += 1
        return [], ["docker"], {}


def _until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def test_lists_again_only_when_something_changed() -> None:
    collector, stopping = Counting(), threading.Event()
    cgroups = {"/docker/a"}
    lister = Lister(collector, 0.02, stopping, signature=lambda: frozenset(cgroups))  # type: ignore[arg-type]
    lister.start()
    try:
        assert lister.latest(timeout=5) == ([], ["docker"], {})
        time.sleep(0.3)  # 15 intervals, nothing changed
        assert collector.listings == 1
        cgroups.add("/lxc.payload.web")  # a container started
        assert _until(lambda: collector.listings == 2)
        lister.poke()  # a pass saw a process gone
        assert _until(lambda: collector.listings == 3)
        lister.full_every = 0.1  # what cgroups cannot show is listed on a clock
        assert _until(lambda: collector.listings >= 5)
    finally:
        stopping.set()
        lister.poke()


def test_a_failed_listing_is_raised_to_the_pass_and_retried() -> None:
    class Failing(Counting):
        def discover(self) -> tuple[list[object], list[str], dict[str, str]]:
            self.listings += 1
            raise RuntimeError("engine busy")

    collector, stopping = Failing(), threading.Event()
    lister = Lister(collector, 0.02, stopping, signature=lambda: frozenset())  # type: ignore[arg-type]
    lister.start()
    try:
        assert _until(lambda: collector.listings >= 3), "a failure is no reason to stop asking"
        try:
            lister.latest(timeout=1)
        except RuntimeError as err:
            assert str(err) == "engine busy"
        else:
            raise AssertionError("the pass must hear the listing's failure")
    finally:
        stopping.set()
        lister.poke()
