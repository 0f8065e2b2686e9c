"""Scale (issue 10), CI-sized: what one more container costs, as CPU time, never wall time.

A population of running busybox containers grows from 10 (4 Docker, 4 LXC, 2 LXD) to 60
(25, 25, 10) while one ``cman monitor --interval 1`` runs. At each size the test reads

- the monitor's own CPU per sample: ``/proc/PID/stat`` utime + stime (every thread, the
  listing thread included) from the end of one pass to the end of ``PASSES`` passes later,
  aligned on the passes the daemon publishes rather than on the clock;
- the CPU of ``cman stats --no-stream --no-monitor --json`` (RUSAGE_CHILDREN, the least of
  ``STATS_ROUNDS`` runs: other work on the host only ever adds to a process's CPU time, and
  one run's start-up varies by tens of ms, as much as 50 containers cost).

The marginal cost per container is the difference between the two sizes divided by the
difference in the containers each one sampled (other running containers cman manages on
the host count too, on both sides). It must stay at most 0.2 ms per sample in the monitor
and 1 ms per `stats` run. The 300-container figures come from benchmarks/bench_scale.py.
Every container is named with the run's PREFIX and removed at the end, also on failure.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import resource
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..conftest import PREFIX, cli, not_selected, selected_engines
from .daemonlab import RunningMonitor, imported, running_monitor

pytestmark = [pytest.mark.engine, pytest.mark.cpu_timing]  # CI runs these on a quiet host

SMALL = {"docker": 4, "lxc": 4, "lxd": 2}
LARGE = {"docker": 25, "lxc": 25, "lxd": 10}
PASSES = 15
"""Monitor passes (1 s each) per reading: enough for a stable figure on a shared 2-CPU host."""
STATS_ROUNDS = 7
MONITOR_MARGINAL_MS = 0.2
STATS_MARGINAL_MS = 1.0
WORKERS = 4
NAME = f"{PREFIX}-scale"


@dataclass(frozen=True)
class Cost:
    """CPU seconds per monitor pass or per `stats` run, and the containers it sampled."""

    cpu: float
    rows: float


@dataclass(frozen=True)
class Costs:
    monitor: tuple[Cost, Cost]
    stats: tuple[Cost, Cost]


def marginal_ms(pair: tuple[Cost, Cost]) -> float:
    small, large = pair
    assert large.rows > small.rows, pair
    return (large.cpu - small.cpu) * 1000 / (large.rows - small.rows)


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latest_pass(mon: RunningMonitor) -> tuple[float, list[dict[str, Any]]] | None:
    """(timestamp, rows) the daemon last published; None before its first pass."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        doc = json.loads(mon.state_file.read_text())
        return float(doc["timestamp"]), list(doc["containers"])
    return None


def next_pass(mon: RunningMonitor, after: float, timeout: float = 30) -> tuple[float, list[dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = latest_pass(mon)
        if latest is not None and latest[0] > after:
            return latest
        time.sleep(0.02)
    raise AssertionError(f"the monitor published no pass within {timeout:g} s")


def monitor_cost(mon: RunningMonitor, names: set[str]) -> Cost:
    """Wait until every container of ``names`` has a rate (two samples), skip a pass, then read
    the daemon's CPU over PASSES passes."""
    deadline = time.monotonic() + 120
    stamp = 0.0
    while True:
        stamp, rows = next_pass(mon, stamp)
        if names <= {r["name"] for r in rows if r["status"] == "ok"}:
            break
        assert time.monotonic() < deadline, f"the monitor never sampled {sorted(names - {r['name'] for r in rows})}"
    stamp, _ = next_pass(mon, stamp)
    cpu0, sampled = process_cpu(mon.pid), 0
    for _ in range(PASSES):
        stamp, rows = next_pass(mon, stamp)
        sampled += len(rows)
    return Cost((process_cpu(mon.pid) - cpu0) / PASSES, sampled / PASSES)


def stats_cost() -> Cost:
    """The least CPU of `cman stats --no-stream --no-monitor --json` (one 1 s interval) over STATS_ROUNDS runs."""
    samples: list[tuple[float, int]] = []
    for _ in range(STATS_ROUNDS + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = cli("stats", "--no-stream", "--no-monitor", "--json", "--interval", "1")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert proc.returncode == 0, proc.stderr
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        samples.append((cpu, len(json.loads(proc.stdout))))
    samples = samples[1:]  # the first warms the caches
    return Cost(min(s[0] for s in samples), statistics.median(s[1] for s in samples))


@dataclass
class Population:
    images: dict[str, str]
    made: dict[str, list[str]] = field(default_factory=dict)

    def names(self) -> set[str]:
        return {n for names in self.made.values() for n in names}

    def grow(self, want: dict[str, int]) -> None:
        """Start containers until each engine has ``want[engine]``, WORKERS at a time."""
        jobs: list[tuple[str, str]] = []
        for engine in self.images:
            have = self.made.setdefault(engine, [])
            for i in range(len(have), want[engine]):
                name = f"{NAME}-{engine}-{i}"
                have.append(name)
                jobs.append((engine, name))
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            done = list(pool.map(lambda job: cli("run", "-d", "--name", job[1], self.images[job[0]], "sleep", "3600",
                                                 backend=job[0]), jobs))
        failed = [f"{job[1]}: {p.stderr.strip()}" for job, p in zip(jobs, done, strict=True) if p.returncode != 0]
        assert not failed, failed

    def cleanup(self) -> None:
        """`cman rm -f` in batches of every name asked for and every listed one with the prefix."""
        names = {e: set(v) for e, v in self.made.items()}
        listed = cli("ps", "-a", "--json")
        if listed.returncode == 0:
            for row in json.loads(listed.stdout):
                if row["name"].startswith(NAME) and row["backend"] in names:
                    names[row["backend"]].add(row["name"])
        batches = [(e, sorted(v)[i : i + 20]) for e, v in names.items() for i in range(0, len(v), 20)]
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda b: cli("rm", "-f", *b[1], backend=b[0]), batches))


@pytest.fixture(scope="module")
def costs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Costs]:
    engines = [e for e in LARGE if e in selected_engines()]
    if not engines:
        not_selected(next(iter(LARGE)))
    with imported(engines, f"{PREFIX}-scale-bb") as images:
        pop = Population(images)
        try:
            pop.grow(SMALL)
            with running_monitor(tmp_path_factory.mktemp("scale"), 1.0) as mon:
                small_monitor = monitor_cost(mon, pop.names())
                small_stats = stats_cost()
                pop.grow(LARGE)
                large_monitor = monitor_cost(mon, pop.names())
                large_stats = stats_cost()
            result = Costs((small_monitor, large_monitor), (small_stats, large_stats))
            print(f"\nscale: monitor CPU per 1 s sample {small_monitor.cpu * 1000:.1f} ms at {small_monitor.rows:.0f}"
                  f" containers, {large_monitor.cpu * 1000:.1f} ms at {large_monitor.rows:.0f}:"
                  f" {marginal_ms(result.monitor):.3f} ms per container;"
                  f" stats --no-monitor CPU {small_stats.cpu * 1000:.0f} ms at {small_stats.rows:.0f},"
                  f" {large_stats.cpu * 1000:.0f} ms at {large_stats.rows:.0f}:"
                  f" {marginal_ms(result.stats):.3f} ms per container; load {os.getloadavg()}")
            yield result
        finally:
            pop.cleanup()


def test_monitor_cpu_per_container_per_sample(costs: Costs) -> None:
    """The monitor's marginal CPU per container per sample is at most 0.2 ms (a cgroup read is tens of µs)."""
    small, large = costs.monitor
    assert marginal_ms(costs.monitor) <= MONITOR_MARGINAL_MS, (
        f"monitor: {small.cpu * 1000:.1f} ms per sample at {small.rows:.0f} containers,"
        f" {large.cpu * 1000:.1f} ms at {large.rows:.0f}; load {os.getloadavg()}")


def test_stats_cpu_per_container(costs: Costs) -> None:
    """`stats --no-stream --no-monitor` costs at most 1 ms of CPU per more container."""
    small, large = costs.stats
    assert marginal_ms(costs.stats) <= STATS_MARGINAL_MS, (
        f"stats: {small.cpu * 1000:.0f} ms CPU at {small.rows:.0f} containers,"
        f" {large.cpu * 1000:.0f} ms at {large.rows:.0f}; load {os.getloadavg()}")
