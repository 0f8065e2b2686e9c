"""CPU rates from two readings of cumulative cgroup counters.

A rate needs two points, so the first reading of a container has no rate:
it is None, never 0.0 (psutil's first cpu_percent() of 0.0 misled users for
years, giampaolo/psutil #332). 100 % means one full CPU, as in docker stats;
host_percent divides by the online CPU count.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from . import _fs
from .counters import CgroupReader, CpuCounters, Prefer, default_reader
from .errors import CgroupUnreadable, ProcessGone

K = TypeVar("K", bound=Hashable)

DEFAULT_CPU_ONLINE = Path("/sys/devices/system/cpu/online")


class SampleStatus(enum.StrEnum):
    """Why a sample has, or lacks, rates (a string, for JSON output)."""

    OK = "ok"  # rates computed from the previous sample
    FIRST = "first"  # baseline only: rates unknown until the next sample
    RESTARTED = "restarted"  # counters went back, cgroup or PID changed: new baseline
    GONE = "gone"  # the process exited; the baseline is dropped
    UNREADABLE = "unreadable"  # a file could not be read; see note


@dataclass(frozen=True)
class CpuSample:
    """One reading of a container's CPU use, with rates when they are known.

    Percentages are over the interval since the previous sample of the same
    key; cumulative counters are since the cgroup was created. Everything
    unknown is None.
    """

    status: SampleStatus
    pid: int
    timestamp_ns: int  # from the sampler's clock (time.monotonic_ns by default)
    cpu_percent: float | None = None  # 100 = one full CPU
    cpu_user_percent: float | None = None
    cpu_system_percent: float | None = None
    host_percent: float | None = None  # cpu_percent / online CPUs; 100 = whole host
    usage_ns: int | None = None
    user_ns: int | None = None
    system_ns: int | None = None
    interval_ns: int | None = None
    online_cpus: int | None = None
    source: str | None = None  # "v1" or "v2"
    cgroup: str | None = None
    note: str = ""


def parse_cpu_list(text: str) -> int:
    """Count CPUs in a kernel cpu list such as "0-3,8,10-11"."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        count += int(high) - int(low) + 1 if high else 1
    return count


def online_cpu_count(path: Path = DEFAULT_CPU_ONLINE) -> int | None:
    """Online CPUs, as docker stats counts them; None if no source says.

    Falls back to the CPUs this process may run on, then to os.cpu_count().
    """
    try:
        count = parse_cpu_list(_fs.read_text(path))
        if count > 0:
            return count
    except (OSError, ValueError):
        pass
    try:
        return len(os.sched_getaffinity(0)) or None
    except (AttributeError, OSError):
        return os.cpu_count()


@dataclass(frozen=True)
class _Baseline:
    pid: int
    timestamp_ns: int
    counters: CpuCounters


def _percent(delta: int | None, interval_ns: int) -> float | None:
    if delta is None or delta < 0:
        return None
    return delta * 100.0 / interval_ns


def _delta(now: int | None, before: int | None) -> int | None:
    return None if now is None or before is None else now - before


class CpuSampler(Generic[K]):
    """Keeps the previous counters per key and turns new readings into rates.

    Keys are whatever identifies a container to the caller (an ID, a name
    plus backend); the PID is its init process on the host. The online CPU
    count is read once, at the first sample, to keep each sample cheap.
    """

    def __init__(
        self,
        reader: CgroupReader | None = None,
        prefer: Prefer = "auto",
        clock: Callable[[], int] = time.monotonic_ns,
        online_cpus: int | None = None,
        cpu_online_path: Path = DEFAULT_CPU_ONLINE,
    ) -> None:
        self._reader = reader
        self.prefer: Prefer = prefer
        self._clock = clock
        self._online_cpus = online_cpus
        self._cpu_online_path = cpu_online_path
        self._baselines: dict[K, _Baseline] = {}

    @property
    def reader(self) -> CgroupReader:
        """The reader in use (the shared host reader unless one was given)."""
        if self._reader is None:
            self._reader = default_reader()
        return self._reader

    @property
    def online_cpus(self) -> int | None:
        """Online CPU count, looked up once."""
        if self._online_cpus is None:
            self._online_cpus = online_cpu_count(self._cpu_online_path)
        return self._online_cpus

    def forget(self, key: K) -> None:
        """Drop a key's baseline (the container was removed)."""
        self._baselines.pop(key, None)

    def seed(self, key: K, pid: int, counters: CpuCounters, timestamp_ns: int) -> None:
        """Make ``counters``, read at ``timestamp_ns`` (this sampler's clock) without the PID,
        the baseline of ``key``: the next :meth:`sample` gives rates if ``pid``'s cgroup is
        the one they came from, and a new baseline (RESTARTED) if it is not."""
        self._baselines[key] = _Baseline(pid, timestamp_ns, counters)

    def sample(self, key: K, pid: int) -> CpuSample:
        """Read `pid`'s cgroup counters now and compare with the last sample of `key`.

        Expected failures become a status (GONE, UNREADABLE), not an
        exception; a host without any cgroup mount still raises CgroupError.
        """
        now = self._clock()
        try:
            counters = self.reader.read(pid, self.prefer)
        except ProcessGone as err:
            self._baselines.pop(key, None)
            return CpuSample(SampleStatus.GONE, pid, now, note=str(err))
        except CgroupUnreadable as err:
            # Keep the baseline: if the next read works, its rate spans both intervals.
            return CpuSample(SampleStatus.UNREADABLE, pid, now, note=str(err))
        return self.compare(key, pid, counters, now)

    def compare(self, key: K, pid: int, counters: CpuCounters, now: int | None = None) -> CpuSample:
        """Rates of ``counters`` (read at ``now``) against the last reading of ``key``, which
        they replace: :meth:`sample` for counters read elsewhere (an engine's API, ``pid`` 0)."""
        now = self._clock() if now is None else now
        previous = self._baselines.get(key)
        self._baselines[key] = _Baseline(pid, now, counters)
        cpus = self.online_cpus
        if previous is None:
            note = "first sample: a rate needs two"
            return _sample(SampleStatus.FIRST, pid, now, counters, cpus, note)
        restart = _restart_reason(previous, pid, counters)
        if restart:
            return _sample(SampleStatus.RESTARTED, pid, now, counters, cpus, restart)
        interval_ns = now - previous.timestamp_ns
        if interval_ns <= 0:
            self._baselines[key] = previous
            note = "no time passed since the last sample"
            return _sample(SampleStatus.OK, pid, now, counters, cpus, note)
        return _sample(SampleStatus.OK, pid, now, counters, cpus, "", previous)


def _sample(
    status: SampleStatus,
    pid: int,
    now: int,
    counters: CpuCounters,
    cpus: int | None,
    note: str,
    previous: _Baseline | None = None,
) -> CpuSample:
    """Build a sample; rates only when a comparable previous reading is given."""
    cpu = user = system = host = None
    interval_ns = None
    if previous is not None:
        interval_ns = now - previous.timestamp_ns
        before = previous.counters
        cpu = _percent(counters.usage_ns - before.usage_ns, interval_ns)
        user = _percent(_delta(counters.user_ns, before.user_ns), interval_ns)
        system = _percent(_delta(counters.system_ns, before.system_ns), interval_ns)
        host = None if cpu is None or not cpus else cpu / cpus
    return CpuSample(
        status=status,
        pid=pid,
        timestamp_ns=now,
        cpu_percent=cpu,
        cpu_user_percent=user,
        cpu_system_percent=system,
        host_percent=host,
        usage_ns=counters.usage_ns,
        user_ns=counters.user_ns,
        system_ns=counters.system_ns,
        interval_ns=interval_ns,
        online_cpus=cpus,
        source=counters.source,
        cgroup=counters.cgroup,
        note=note,
    )


def _restart_reason(previous: _Baseline, pid: int, counters: CpuCounters) -> str:
    """Say why the previous counters are not comparable, or "" if they are."""
    before = previous.counters
    if pid != previous.pid:
        return f"init PID changed from {previous.pid} to {pid}: new baseline"
    if (counters.source, counters.cgroup) != (before.source, before.cgroup):
        return (
            f"cgroup changed from {before.source}:{before.cgroup} to"
            f" {counters.source}:{counters.cgroup}: new baseline"
        )
    if counters.usage_ns < before.usage_ns:
        return "CPU counters went backwards (container restarted?): new baseline"
    return ""


def sample_once(
    pids: Mapping[K, int],
    interval: float = 1.0,
    *,
    reader: CgroupReader | None = None,
    prefer: Prefer = "auto",
    clock: Callable[[], int] = time.monotonic_ns,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[K, CpuSample]:
    """Read every container, wait `interval` seconds, read again; return the second samples.

    Use a CpuSampler directly for repeated sampling: it avoids the wait by
    reusing the previous reading as the baseline.
    """
    sampler: CpuSampler[K] = CpuSampler(reader=reader, prefer=prefer, clock=clock)
    for key, pid in pids.items():
        sampler.sample(key, pid)
    sleep(interval)
    return {key: sampler.sample(key, pid) for key, pid in pids.items()}
