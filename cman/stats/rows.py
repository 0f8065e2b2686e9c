"""What ``stats`` reports: one row per container (:class:`ContainerStats`), a
:class:`Snapshot` of all of them, and the :class:`Target` a row was read for. Plain data,
shared by the collector, the CLI's tables and JSON, and the monitor's state file and metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..cgroups import CpuSample, SampleStatus
from ..models import State

STOPPED = "stopped"
"""Status of a container that is not running: it has no process, hence no rates."""

STATUSES = (*(str(s) for s in SampleStatus), STOPPED)
"""Every value of :attr:`ContainerStats.status`: ok, first, restarted, gone, unreadable, stopped."""

_RUNNING = (State.RUNNING, State.PAUSED, State.RESTARTING)

Key = tuple[str, str]
"""(backend, container ID): what the sampler keeps baselines by."""

Found = tuple[list["Target"], list[str], dict[str, str]]
"""What :meth:`StatsCollector.discover` found: (targets, backends that answered, errors by backend)."""


# -- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A container to sample, as the backend's listing described it."""

    backend: str
    id: str
    name: str
    managed: bool
    state: State
    pid: int | None
    api: bool = False
    """Sampled through the engine's API (an engine on another host), not from cgroup files."""

    @property
    def key(self) -> Key:
        return (self.backend, self.id)

    @property
    def running(self) -> bool:
        return self.state in _RUNNING


@dataclass(frozen=True)
class ContainerStats:
    """One container's CPU use over the last interval. Unknown is None, never 0.

    ``status`` says why rates are present or missing: ``ok``; ``first`` (a
    baseline, rates need a second sample); ``restarted`` (the init PID or the
    cgroup changed, or counters went back: new baseline); ``gone`` (the process
    exited between listing and reading); ``unreadable`` (see ``note``);
    ``stopped`` (not running).
    """

    name: str
    backend: str
    id: str
    managed: bool
    state: str
    status: str
    pid: int | None = None
    cpu_percent: float | None = None
    """100 = one full CPU over the interval, as docker stats."""
    cpu_user_percent: float | None = None
    cpu_system_percent: float | None = None
    host_percent: float | None = None
    """cpu_percent divided by the online CPUs: 100 = the whole host."""
    cpu_usage_ns: int | None = None
    """CPU time used since the container's cgroup was created."""
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    interval_s: float | None = None
    online_cpus: int | None = None
    cgroup_version: str | None = None
    """"v1" or "v2": which hierarchy the counters came from."""
    cgroup: str | None = None
    timestamp: float | None = None
    """Wall-clock time of the reading (seconds since the epoch)."""
    note: str = ""
    sampled_by: str = "cman"
    """"cman" when this process read the counters, "monitor" when the monitor daemon did."""

    @property
    def ref(self) -> str:
        return f"{self.backend}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``cman stats --json`` (every value is already JSON-ready)."""
        return {name: getattr(self, name) for name in _STATS_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContainerStats:
        """Rebuild from :meth:`to_dict` output; unknown keys (newer monitors) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_STATS_FIELDS = tuple(f.name for f in dataclasses.fields(ContainerStats))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def stats_from_sample(target: Target, sample: CpuSample, wall: float) -> ContainerStats:
    """Combine what the listing said with what the cgroup files said."""
    return ContainerStats(
        name=target.name,
        backend=target.backend,
        id=target.id,
        managed=target.managed,
        state=str(target.state),
        status=str(sample.status),
        pid=sample.pid or None,  # 0: read through the engine API, no PID of this host
        cpu_percent=_round(sample.cpu_percent),
        cpu_user_percent=_round(sample.cpu_user_percent),
        cpu_system_percent=_round(sample.cpu_system_percent),
        host_percent=_round(sample.host_percent),
        cpu_usage_ns=sample.usage_ns,
        cpu_user_ns=sample.user_ns,
        cpu_system_ns=sample.system_ns,
        interval_s=None if sample.interval_ns is None else round(sample.interval_ns / 1e9, 6),
        online_cpus=sample.online_cpus,
        cgroup_version=sample.source,
        cgroup=sample.cgroup,
        timestamp=wall,
        note=sample.note,
    )


def stopped_stats(target: Target, wall: float) -> ContainerStats:
    return ContainerStats(
        name=target.name,
        backend=target.backend,
        id=target.id,
        managed=target.managed,
        state=str(target.state),
        status=STOPPED,
        timestamp=wall,
        note="not running: no process to account",
    )


@dataclass(frozen=True)
class Snapshot:
    """Every selected container at one moment, and what went wrong per backend."""

    rows: tuple[ContainerStats, ...]
    timestamp: float
    duration_s: float
    """Time spent listing and reading (not the interval slept)."""
    backends: tuple[str, ...]
    """Backends that answered."""
    errors: Mapping[str, str] = field(default_factory=dict)
    """Backend -> why it was skipped."""


