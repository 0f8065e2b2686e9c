"""The monitor's listings, kept fresh in a thread of their own.

A sample must cost a cgroup read per container and happen every interval, whatever the
engines do. Asking an engine which containers exist can take seconds when the host is
busy (LXD under load, a daemon restarting), and costs CPU per container even when it is
not, so listings run here, and only when something changed: each interval the thread
lists the cgroups under the engines' parents (directory listings, no file read) and asks
the engines again when that set changed, when a pass saw a container vanish
(:meth:`Lister.poke`), or every :data:`FULL_EVERY` seconds (what cgroups do not show:
containers created or removed without running, renames, pauses). Each pass samples the
containers of the latest listing: a slow engine delays when a new container is first seen,
never a sample, and a removed one drops out at once, because its init process is gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..stats import Found, StatsCollector


FULL_EVERY = 10.0
"""Seconds between listings when the cgroups show no change."""


class Lister:
    """Runs ``collector.discover()`` when the containers may have changed, until ``stopping`` is set."""

    def __init__(self, collector: StatsCollector, interval: float, stopping: threading.Event,
                 signature: Callable[[], frozenset[str]] | None = None) -> None:
        self.collector = collector
        self.interval = interval
        self.stopping = stopping
        self.signature = signature or collector.cgroup_population
        self.full_every = max(FULL_EVERY, 2 * interval)
        self._latest: Found | BaseException | None = None
        self._ready = threading.Condition()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.listed_at = 0.0
        """time.monotonic() when the latest listing returned."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="monitor-listing", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """List again now (a pass saw a container's process gone)."""
        self._wake.set()

    def _run(self) -> None:
        seen: frozenset[str] | None = None
        while not self.stopping.is_set():
            began = time.monotonic()
            now_seen = self.signature()  # before the listing: a change during it lists again
            if self._wake.is_set() or now_seen != seen or began - self.listed_at >= self.full_every:
                self._wake.clear()
                seen = now_seen
                try:
                    found: Found | BaseException = self.collector.discover()
                except Exception as err:  # handed to the pass, which logs it
                    found = err
                    seen = None
                with self._ready:
                    self._latest = found
                    self.listed_at = time.monotonic()
                    self._ready.notify_all()
            self._wake.wait(max(0.0, self.interval - (time.monotonic() - began)))
            if self.stopping.is_set():
                break

    def latest(self, timeout: float) -> Found:
        """The latest listing; the first call waits for one (up to ``timeout`` seconds).
        Raises what the latest listing raised."""
        with self._ready:
            if self._latest is None:
                self._ready.wait_for(lambda: self._latest is not None or self.stopping.is_set(), timeout)
            found = self._latest
        if found is None:
            raise TimeoutError(f"no listing within {timeout:g} s")
        if isinstance(found, BaseException):
            raise found
        return found
