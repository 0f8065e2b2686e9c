"""CPU samples for containers across backends: the library behind ``cman stats``,
``cman top`` and the monitor daemon.

How a sample is taken, and why it is cheap:

1. **One listing call per backend** (:meth:`Backend.containers`) gives every
   container with its state and, where the engine's listing has it, its init PID
   (LXD's ``/1.0/instances?recursion=2`` and ``lxc-ls -F PID`` do).
2. **PIDs the listing lacks** come from :meth:`Backend.init_pids`, which each engine
   makes as cheap as it can (Docker reads containerd's ``init.pid`` files).
3. **The cgroup is resolved from the PID** (``/proc/PID/cgroup``) and its
   counters are read from the host's cgroup files by :mod:`cman.cgroups` - never
   from a name (``lxc.payload.NAME`` is not a safe key).

A rate needs two readings, so the first sample of a container is unknown
(``None``), never 0. CPU % is delta usage / delta wall time x 100, so 100 means
one full CPU, as in ``docker stats``; ``host_percent`` divides by the online CPUs.

Cgroup files are read from this host, so a backend whose engine runs elsewhere
(:meth:`Backend.locality`) lacks ``Feature.CPU_STATS`` and is refused with
:class:`~cman.errors.Unsupported` rather than reporting another host's PIDs.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import backends as _registry
from .backends.base import Backend, Feature
from .cgroups import CgroupReader, CpuSample, CpuSampler, Prefer, SampleStatus
from .errors import CmanError, InvalidValue, NoEngine
from .models import Container, State

STOPPED = "stopped"
"""Status of a container that is not running: it has no process, hence no rates."""

STATUSES = (*(str(s) for s in SampleStatus), STOPPED)
"""Every value of :attr:`ContainerStats.status`: ok, first, restarted, gone, unreadable, stopped."""

_RUNNING = (State.RUNNING, State.PAUSED, State.RESTARTING)

Key = tuple[str, str]
"""(backend, container ID): what the sampler keeps baselines by."""


def parse_interval(text: str | float, field_name: str = "--interval") -> float:
    """Seconds between samples: a finite number greater than 0."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InvalidValue(field_name, text, "use a number of seconds greater than 0, e.g. 1 or 0.5") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidValue(field_name, text, "must be a number of seconds greater than 0")
    return value


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

    @property
    def key(self) -> Key:
        return (self.backend, self.id)


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
        pid=sample.pid,
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


# -- where backends come from ---------------------------------------------------------


class BackendSource(Protocol):
    """What the collector needs to find backends; the CLI's Session is one."""

    def listing_backends(self) -> list[str]: ...

    def backend(self, name: str | None = None) -> Backend: ...

    def explicit_backend(self) -> str | None: ...


class Backends:
    """A :class:`BackendSource` for library use (the monitor): the same choice as ``cman ps``.

    With ``option`` (or $CMAN_BACKEND) only that backend; otherwise every
    reachable one, checked again at each call so an engine started later is
    picked up.
    """

    def __init__(self, option: str | None = None) -> None:
        self._option = option
        self._loaded: dict[str, Backend] = {}

    def explicit_backend(self) -> str | None:
        return _registry.explicit_name(self._option)

    def listing_backends(self) -> list[str]:
        explicit = self.explicit_backend()
        if explicit:
            return [explicit]
        return _registry.reachable_names()

    def backend(self, name: str | None = None) -> Backend:
        chosen = name or _registry.default_name(self._option)
        if chosen not in self._loaded:
            self._loaded[chosen] = _registry.load(chosen)
        return self._loaded[chosen]

    def close(self) -> None:
        for b in self._loaded.values():
            b.close()
        self._loaded.clear()


# -- collecting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which containers to sample.

    By default the running containers cman manages; ``all`` adds every other
    container, running or not. ``refs`` (backend, NAME or ID) pairs, when given,
    are exactly the containers wanted, whatever their state or owner.
    """

    all: bool = False
    refs: tuple[tuple[str, str], ...] = ()


def _matches(c: Container, ref: str) -> bool:
    return ref in (c.name, c.id) or (len(ref) >= 12 and c.id.startswith(ref))


class StatsCollector:
    """Lists the selected containers and samples their cgroups, keeping baselines between calls.

    Errors of a backend the user chose (``--backend``, or a BACKEND:NAME) are
    raised; errors of a backend found by auto-detection are reported in
    :attr:`Snapshot.errors` and the others go on, as ``cman ps`` does.
    """

    def __init__(
        self,
        source: BackendSource,
        selection: Selection | None = None,
        *,
        prefer: Prefer = "auto",
        reader: CgroupReader | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.selection = selection or Selection()
        self.sampler: CpuSampler[Key] = CpuSampler(reader=reader, prefer=prefer, clock=clock)
        self._wall = wall
        self._clock = clock
        self._known: set[Key] = set()

    # -- listing --

    def _backends(self) -> tuple[list[str], set[str]]:
        """(backends to ask, those whose errors are the user's to see)."""
        refs = self.selection.refs
        if refs:
            wanted = list(dict.fromkeys(b for b, _ in refs))
            return wanted, set(wanted)
        explicit = self.source.explicit_backend()
        names = self.source.listing_backends()
        if not names:
            raise NoEngine()
        return names, {explicit} if explicit else set()

    def _select(self, bname: str, backend: Backend, listing: list[Container]) -> list[Container]:
        refs = [r for b, r in self.selection.refs if b == bname]
        if not refs:
            if self.selection.all:
                return listing
            return [c for c in listing if c.managed and c.state in _RUNNING]
        chosen: dict[str, Container] = {}
        for ref in refs:
            found = next((c for c in listing if _matches(c, ref)), None)
            if found is None:  # created after the listing, or a short ID: ask once
                found = backend.inspect(ref)
            chosen.setdefault(found.id, found)
        return list(chosen.values())

    def _list(self, backend: Backend) -> tuple[list[Container], dict[str, int | None]]:
        listing = backend.containers(all=self.selection.all or bool(self.selection.refs))
        chosen = self._select(backend.name, backend, listing)
        return chosen, backend.init_pids(chosen)

    def discover(self) -> tuple[list[Target], list[str], dict[str, str]]:
        """One listing per backend -> (targets, backends that answered, errors by backend).

        Backends are asked in parallel (threads: each waits on its engine's socket or
        tool), so the slowest listing, not their sum, adds to the wall time.
        """
        names, strict = self._backends()
        results: dict[str, tuple[list[Container], dict[str, int | None]] | Exception] = {}
        loaded: list[Backend] = []
        for bname in names:  # imports happen here, in this thread, one after the other
            try:
                backend = self.source.backend(bname)
                backend.require(Feature.CPU_STATS, "cman reads the cgroup files of this host")
                loaded.append(backend)
            except CmanError as err:
                results[bname] = err

        def work(backend: Backend) -> None:
            try:
                results[backend.name] = self._list(backend)
            except Exception as err:  # raised again below, in the caller's thread
                results[backend.name] = err

        if len(loaded) == 1:
            work(loaded[0])
        else:
            threads = [threading.Thread(target=work, args=(b,), name=f"list-{b.name}", daemon=True) for b in loaded]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        targets: list[Target] = []
        answered: list[str] = []
        errors: dict[str, str] = {}
        for bname in names:
            result = results[bname]
            if isinstance(result, Exception):
                if bname in strict or not isinstance(result, CmanError):
                    raise result
                errors[bname] = str(result)
                continue
            chosen, pids = result
            answered.append(bname)
            for c in chosen:
                running = c.state in _RUNNING
                targets.append(Target(bname, c.id, c.name, c.managed, c.state, pids.get(c.id) if running else None))
        return targets, answered, errors

    # -- sampling --

    def sample(self, targets: Sequence[Target]) -> list[ContainerStats]:
        """Read each target's counters now; rates against the previous call's reading."""
        wall = self._wall()
        rows: list[ContainerStats] = []
        for t in targets:
            if t.pid is None:
                self.sampler.forget(t.key)
                rows.append(stopped_stats(t, wall))
                continue
            self._known.add(t.key)
            rows.append(stats_from_sample(t, self.sampler.sample(t.key, t.pid), wall))
        return rows

    def forget_others(self, targets: Sequence[Target]) -> None:
        """Drop baselines of containers that are no longer listed (streaming, the monitor)."""
        keep = {t.key for t in targets}
        for key in self._known - keep:
            self.sampler.forget(key)
        self._known &= keep

    def tick(self) -> Snapshot:
        """List and sample once: the streaming step (first rows of a container are ``first``)."""
        start = self._clock()
        targets, answered, errors = self.discover()
        rows = self.sample(targets)
        self.forget_others(targets)
        return Snapshot(tuple(rows), self._wall(), (self._clock() - start) / 1e9, tuple(answered), errors)

    def measure(self, interval: float, sleep: Callable[[float], None] = time.sleep) -> Snapshot:
        """List once, read, wait ``interval`` seconds, read again (``--no-stream``).

        Wall time is about interval + one listing + two readings.
        """
        start = self._clock()
        targets, answered, errors = self.discover()
        self.sample(targets)
        spent = self._clock() - start
        sleep(interval)
        again = self._clock()
        rows = self.sample(targets)
        spent += self._clock() - again
        return Snapshot(tuple(rows), self._wall(), spent / 1e9, tuple(answered), errors)

