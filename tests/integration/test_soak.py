"""Soak (issue 13): the monitor runs for ``CMAN_SOAK_SECONDS`` (default 600) while containers are
created and removed every second, spread over the engines.

``LANES`` churn threads per engine each start a container (``cman run -d``) every
``LANES * len(engines)`` seconds and remove (``cman rm -f``) the oldest once two of their own
are up: together about one create and one remove per second (a lane of LXD needs ~4 s for
a create and a remove, so one lane per engine could not keep that pace). Meanwhile the test watches the monitor daemon:

- its RSS (``/proc/PID/status`` VmRSS) grows by less than 5 MB after a warm-up;
- its open file descriptors and threads stay flat (a small slack for the HTTP server's
  handler of a scrape that is still closing);
- no sample is missed: each pass's start (``timestamp - duration_s`` in the samples file)
  lies one interval after the previous one, and no pass skips an engine (``errors``);
- the series of a removed container leave ``/metrics`` within two intervals.

The figures are printed. Every container is named with the run's PREFIX and removed at the
end, and the monitor stopped (SIGKILLed by PID if ``stop`` failed), also when a test fails.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..conftest import PREFIX, cli, selected_engines
from .daemonlab import imported, running_monitor, scrape

pytestmark = [pytest.mark.engine, pytest.mark.slow]

SOAK_SECONDS = float(os.environ.get("CMAN_SOAK_SECONDS", "600"))
INTERVAL = 1.0
WARM_UP = min(60.0, SOAK_SECONDS / 4)
RSS_GROWTH_LIMIT = 5 * 1024 * 1024
SLACK = 4
"""File descriptors or threads above the warm-up figure that scrapes in progress may hold (on a loaded
host a handler thread and its socket can outlive the next scrape); the end figures must be flat."""
LIVE_PER_ENGINE = 2
LANES = 2
@dataclass
class Churn:
    """One engine's share of the churn."""

    engine: str
    image: str
    created: int = 0
    removed: list[tuple[str, float]] = field(default_factory=list)
    """(name, when its removal returned)."""
    live: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lane: int = 0
    seq: int = 0

    def step(self) -> None:
        self.seq += 1
        name = f"{PREFIX}-soak-{self.engine}{self.lane}-{self.seq}"  # lxd and lxc share "lx"
        proc = cli("run", "-d", "--name", name, self.image, "sleep", "3600", backend=self.engine)
        if proc.returncode != 0:
            self.failures.append(f"run -d {name}: {proc.returncode} {proc.stderr.strip()}")
            return
        self.created += 1
        self.live.append(name)
        while len(self.live) > LIVE_PER_ENGINE:
            old = self.live.pop(0)
            gone = cli("rm", "-f", old, backend=self.engine)
            if gone.returncode != 0:
                self.failures.append(f"rm -f {old}: {gone.returncode} {gone.stderr.strip()}")
                continue
            self.removed.append((old, time.time()))

    def run(self, stop: threading.Event, period: float, offset: float) -> None:
        """A step every ``period`` seconds, the first after ``offset`` (the lanes take turns)."""
        next_at = time.monotonic() + offset
        stop.wait(offset)
        while not stop.is_set():
            try:
                self.step()
            except Exception as err:  # reported by the test
                self.failures.append(f"churn failed: {err!r}")
            next_at += period
            stop.wait(max(0.0, next_at - time.monotonic()))

    def cleanup(self) -> None:
        for name in self.live:
            cli("rm", "-f", name, backend=self.engine)
        self.live.clear()


@dataclass
class Watch:
    """What the test saw of the monitor."""

    pid: int
    port: int
    state_file: Path
    proc_samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(elapsed s, RSS bytes, fds, threads)."""
    passes: dict[float, float] = field(default_factory=dict)
    """Sample timestamp -> the pass's start (timestamp - duration_s)."""
    skipped: list[str] = field(default_factory=list)
    """Passes in which an engine was skipped, and why."""
    scrape_failures: list[str] = field(default_factory=list)
    stale: dict[str, float] = field(default_factory=dict)
    """Removed container -> how long after its removal its series were still served."""
    seen_in_metrics: set[str] = field(default_factory=set)
    scrapes: int = 0

    def proc_figures(self) -> tuple[int, int, int]:
        status = Path(f"/proc/{self.pid}/status").read_text()
        rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]
        threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
        return rss, len(os.listdir(f"/proc/{self.pid}/fd")), threads

    def read_state(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(self.state_file.read_text())
            stamp = float(doc["timestamp"])
            if stamp not in self.passes:
                self.passes[stamp] = stamp - float(doc.get("duration_s") or 0)
                if doc.get("errors"):
                    self.skipped.append(f"{time.strftime('%H:%M:%S', time.localtime(stamp))}: {doc['errors']}")

    def scrape(self, churns: list[Churn]) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = scrape(self.port)
        except OSError as err:
            self.scrape_failures.append(f"{time.strftime('%H:%M:%S')}: {err}")
            return
        self.scrapes += 1
        names = {s.labels.get("name", "") for f in text_string_to_metric_families(text)
                 if f.name.startswith("cman_container_") for s in f.samples}
        self.seen_in_metrics |= {n for n in names if n.startswith(PREFIX)}
        now = time.time()
        for churn in churns:
            for name, when in churn.removed:
                if name in names and now - when > 2 * INTERVAL + 1:
                    self.stale[name] = max(self.stale.get(name, 0.0), now - when)

    def missed(self) -> list[str]:
        """Passes that should have happened between two that did (starts one interval apart)."""
        starts = sorted(self.passes.values())
        out = []
        for a, b in itertools.pairwise(starts):
            lost = round((b - a) / INTERVAL) - 1
            if lost > 0:
                out.append(f"{lost} pass(es) missing after {time.strftime('%H:%M:%S', time.localtime(a))}"
                           f" (next pass {b - a:.2f} s later)")
        return out


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    with imported(selected_engines(), f"{PREFIX}-soakbb") as made:
        yield made


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Watch]:
    with running_monitor(tmp_path, INTERVAL) as running:
        yield Watch(running.pid, running.port, running.state_file)


def test_monitor_soak_under_churn(images: dict[str, str], monitor: Watch) -> None:
    churns = [Churn(engine, image, lane=lane) for engine, image in images.items() for lane in range(LANES)]
    stop = threading.Event()
    period = float(len(churns))
    threads = [threading.Thread(target=c.run, args=(stop, period, float(i)), name=f"churn-{c.engine}-{c.lane}")
               for i, c in enumerate(churns)]
    started = time.monotonic()
    try:
        for t in threads:
            t.start()
        next_figures = started
        while (elapsed := time.monotonic() - started) < SOAK_SECONDS:
            monitor.read_state()
            if time.monotonic() >= next_figures:
                monitor.proc_samples.append((elapsed, *monitor.proc_figures()))
                monitor.scrape(churns)
                next_figures += 5.0
            time.sleep(INTERVAL / 4)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
        for c in churns:
            c.cleanup()
    took = time.monotonic() - started
    time.sleep(3 * INTERVAL)
    monitor.scrape(churns)

    warm = [s for s in monitor.proc_samples if s[0] >= WARM_UP]
    assert warm, "no figures after the warm-up"
    base_rss, base_fds, base_threads = warm[0][1:]
    max_rss = max(s[1] for s in warm)
    max_fds = max(s[2] for s in warm)
    max_threads = max(s[3] for s in warm)
    created = sum(c.created for c in churns)
    removed = sum(len(c.removed) for c in churns)
    missed = monitor.missed()
    print(f"\n== soak: {took:.0f} s, interval {INTERVAL:g} s, warm-up {WARM_UP:.0f} s ==")
    for c in churns:
        print(f"{c.engine:6} lane {c.lane}  created {c.created:4}  removed {len(c.removed):4}  failures {len(c.failures)}")
    print(f"churn: {created / took:.2f} creates/s, {removed / took:.2f} removes/s; "
          f"{len(monitor.seen_in_metrics)} of the containers seen in /metrics")
    print(f"monitor RSS: {monitor.proc_samples[0][1] / 2**20:.1f} MiB at start, {base_rss / 2**20:.1f} after the warm-up,"
          f" max {max_rss / 2**20:.1f}, end {warm[-1][1] / 2**20:.1f} (growth {(max_rss - base_rss) / 2**20:.2f} MiB)")
    print(f"monitor fds: {base_fds} after the warm-up, max {max_fds}, end {warm[-1][2]};"
          f" threads: {base_threads}, max {max_threads}, end {warm[-1][3]}")
    print(f"passes: {len(monitor.passes)} seen, missed {len(missed)}, with an engine skipped {len(monitor.skipped)};"
          f" scrapes {monitor.scrapes}, failed {len(monitor.scrape_failures)}; stale series {len(monitor.stale)}")

    problems = [f for c in churns for f in c.failures]
    assert not problems, "the churn itself failed:\n" + "\n".join(problems[:20])
    assert created >= took / period * len(churns) * 0.5, f"too little churn: {created} creates in {took:.0f} s"
    assert monitor.seen_in_metrics, "no churned container ever showed in /metrics"
    assert not monitor.scrape_failures, "\n".join(monitor.scrape_failures)
    assert max_rss - base_rss < RSS_GROWTH_LIMIT, f"RSS grew by {(max_rss - base_rss) / 2**20:.2f} MiB"
    assert max_fds <= base_fds + SLACK and warm[-1][2] <= base_fds + 1, (base_fds, max_fds, warm[-1][2])
    assert max_threads <= base_threads + SLACK and warm[-1][3] <= base_threads + 1, \
        (base_threads, max_threads, warm[-1][3])
    assert not missed, "\n".join(missed)
    assert not monitor.skipped, "\n".join(monitor.skipped[:20])
    assert not monitor.stale, f"series of removed containers still served (s after removal): {monitor.stale}"
