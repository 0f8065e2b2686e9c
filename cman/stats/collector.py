"""Taking CPU samples: the collector behind ``cman stats``, ``cman top`` and the monitor.

How a sample is taken, and why it is cheap:

1. **One listing call per backend** (:meth:`Backend.containers`) says which containers
   exist, in the cheapest form each engine has (LXD ``recursion=1``, LXC's directories).
2. **Init PIDs** come from :meth:`Backend.init_pids`, which each engine makes as cheap as
   it can (liblxc's monitor processes for LXC and LXD, containerd's ``init.pid`` files
   for Docker), asking the engine only for what those miss.
3. **The cgroup is resolved from the PID** (``/proc/PID/cgroup``) and its counters are
   read from the host's cgroup files by :mod:`cman.cgroups` - never from a name
   (``lxc.payload.NAME`` is not a safe key). :meth:`StatsCollector.measure` reads the
   engines' cgroup parents before listing and matches those readings the same way.

A rate needs two readings, so the first sample of a container is unknown
(``None``), never 0. CPU % is delta usage / delta wall time x 100, so 100 means
one full CPU, as in ``docker stats``; ``host_percent`` divides by the online CPUs.

Cgroup files are this host's, so a backend whose engine runs elsewhere
(:meth:`Backend.locality`) lacks ``Feature.CPU_STATS``; with ``Feature.API_CPU_STATS``
its counters come from the engine's API (:meth:`Backend.cpu_counters`) instead, else it
is refused with :class:`~cman.errors.Unsupported` rather than reporting another host's PIDs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .. import backends as _registry
from ..backends.base import Backend, Feature
from ..cgroups import CgroupError, CgroupReader, CpuCounters, CpuSample, CpuSampler, Prefer, SampleStatus
from ..errors import CmanError, NoEngine
from ..models import Container
from .rows import _RUNNING, ContainerStats, Found, Key, Snapshot, Target, stats_from_sample, stopped_stats

if TYPE_CHECKING:
    from ..cgroups.scan import Reading as scan_Reading

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

    def _list(self, backend: Backend, api: bool) -> tuple[list[Container], dict[str, int | None]]:
        listing = backend.containers(all=self.selection.all or bool(self.selection.refs))
        chosen = self._select(backend.name, backend, listing)
        return chosen, {} if api else backend.init_pids(chosen)

    def discover(self) -> Found:
        """One listing per backend -> (targets, backends that answered, errors by backend).

        Backends are asked in parallel (threads: each waits on its engine's socket or
        tool), so the slowest listing, not their sum, adds to the wall time.
        """
        names, strict = self._backends()
        results: dict[str, tuple[list[Container], dict[str, int | None]] | Exception] = {}
        loaded: list[Backend] = []
        api: set[str] = set()
        for bname in names:  # imports happen here, in this thread, one after the other
            try:
                backend = self.source.backend(bname)
                features = backend.features()
                if Feature.CPU_STATS not in features and Feature.API_CPU_STATS in features:
                    api.add(bname)  # an engine on another host: its API has the counters
                else:
                    backend.require(Feature.CPU_STATS, "cman reads the cgroup files of this host")
                loaded.append(backend)
            except CmanError as err:
                results[bname] = err

        def work(backend: Backend) -> None:
            try:
                results[backend.name] = self._list(backend, backend.name in api)
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
                targets.append(Target(bname, c.id, c.name, c.managed, c.state, pids.get(c.id) if running else None,
                                      api=bname in api))
        return targets, answered, errors

    # -- sampling --

    def sample(self, targets: Sequence[Target]) -> list[ContainerStats]:
        """Read each target's counters now; rates against the previous call's reading."""
        wall = self._wall()
        from_api = self._api_samples([t for t in targets if t.api and t.running])
        rows: list[ContainerStats] = []
        for t in targets:
            if t.key in from_api:
                self._known.add(t.key)
                rows.append(stats_from_sample(t, from_api[t.key], wall))
                continue
            if t.pid is None:
                self.sampler.forget(t.key)
                rows.append(stopped_stats(t, wall))
                continue
            self._known.add(t.key)
            rows.append(stats_from_sample(t, self.sampler.sample(t.key, t.pid), wall))
        return rows

    def _api_samples(self, targets: Sequence[Target]) -> dict[Key, CpuSample]:
        """One reading of the engines' API counters for ``targets`` (containers elsewhere), as samples."""
        out: dict[Key, CpuSample] = {}
        by_backend: dict[str, list[Target]] = {}
        for t in targets:
            by_backend.setdefault(t.backend, []).append(t)
        for bname, group in by_backend.items():
            try:
                counters = self.source.backend(bname).cpu_counters([t.id for t in group])
            except CmanError as err:
                now = self._clock()
                out.update({t.key: CpuSample(SampleStatus.UNREADABLE, 0, now, note=str(err)) for t in group})
                continue
            now = self._clock()
            for t in group:
                found = counters.get(t.id)
                if found is None:
                    self.sampler.forget(t.key)
                    out[t.key] = CpuSample(SampleStatus.GONE, 0, now, note="the engine has no CPU figures for it")
                else:
                    out[t.key] = self.sampler.compare(t.key, 0, found, now)
        return out

    def cgroup_population(self) -> frozenset[str]:
        """The cgroups under the engines' parents and liblxc's monitors, by name only: what
        changes when a container starts or stops (the monitor lists again only then)."""
        from ..cgroups import scan

        return scan.population(self.sampler.reader, [*_cgroup_parents(self.source), "lxc.monitor.*"])

    def forget_others(self, targets: Sequence[Target]) -> None:
        """Drop baselines of containers that are no longer listed (streaming, the monitor)."""
        keep = {t.key for t in targets}
        for key in self._known - keep:
            self.sampler.forget(key)
        self._known &= keep

    def tick(self, found: Found | None = None) -> Snapshot:
        """List and sample once: the streaming step (first rows of a container are ``first``).
        With ``found`` (a listing made elsewhere, e.g. the monitor's), sample only."""
        start = self._clock()
        targets, answered, errors = found if found is not None else self.discover()
        rows = self.sample(targets)
        self.forget_others(targets)
        return Snapshot(tuple(rows), self._wall(), (self._clock() - start) / 1e9, tuple(answered), errors)

    def measure(self, interval: float, sleep: Callable[[float], None] = time.sleep) -> Snapshot:
        """Read, wait ``interval`` seconds, read again (``--no-stream``).

        The first reading is taken before any engine is asked: every cgroup under the
        engines' parents (:data:`cman.backends.CGROUP_PARENTS`) is read at once, and the
        listings run during the interval. Each container is then matched to its early
        reading through its init PID's cgroup; one that has none (started during the
        interval, or kept elsewhere by its engine) is read now and again one interval
        later. Wall time is about interval + one reading of every container.
        """
        from ..cgroups import scan

        start = self._clock()
        early = scan.read_parents(self.sampler.reader, _cgroup_parents(self.source), self._clock)
        found: list[Found | BaseException] = []

        primed: list[int] = []

        def listing() -> None:
            try:
                done = self.discover()
                remote = [t for t in done[0] if t.api and t.running]
                if remote:
                    self._api_samples(remote)  # their first reading: only the listing could name them
                    primed.append(self._clock())
                found.append(done)
            except BaseException as err:  # raised again below, in the caller's thread
                found.append(err)

        worker = threading.Thread(target=listing, name="stats-listing", daemon=True)
        worker.start()
        spent = self._clock() - start
        sleep(max(0.0, interval - spent / 1e9))
        worker.join()
        result = found[0]
        if isinstance(result, BaseException):
            raise result
        targets, answered, errors = result
        if primed:  # containers read through an API get a whole interval too
            sleep(max(0.0, interval - (self._clock() - primed[0]) / 1e9))
        again = self._clock()
        self._seed(targets, early)
        rows = self.sample(targets)
        late = [i for i, (t, r) in enumerate(zip(targets, rows, strict=True))
                if t.pid is not None and r.status in (SampleStatus.FIRST, SampleStatus.RESTARTED)]
        spent += self._clock() - again
        if late:
            sleep(interval)
            again = self._clock()
            for i, row in zip(late, self.sample([targets[i] for i in late]), strict=True):
                rows[i] = row
            spent += self._clock() - again
        return Snapshot(tuple(rows), self._wall(), spent / 1e9, tuple(answered), errors)

    def _seed(self, targets: Sequence[Target], early: Mapping[scan_Reading, tuple[int, CpuCounters]]) -> None:
        """Give each running target the early reading of its init PID's cgroup as its baseline."""
        if not early:
            return
        reader = self.sampler.reader
        for t in targets:
            if t.pid is None:
                continue
            try:
                cgroups = reader.resolve(t.pid)
            except CgroupError:
                continue  # gone or unreadable: the sample says which
            paths = {"v1": cgroups.v1_cpuacct, "v2": cgroups.v2}
            order = ("v1", "v2") if self.sampler.prefer == "v1" else ("v2", "v1")
            keys = [(v, path) for v in order if (path := paths[v]) is not None]
            hit = next((early[k] for k in keys if k in early), None)
            if hit is not None:
                self.sampler.seed(t.key, t.pid, hit[1], hit[0])


def _cgroup_parents(source: BackendSource) -> list[str]:
    """The cgroup parents of the backends ``source`` may list (every engine's, without a choice)."""
    explicit = source.explicit_backend()
    chosen = [explicit] if explicit else list(_registry.CGROUP_PARENTS)
    return list(dict.fromkeys(p for name in chosen for p in _registry.CGROUP_PARENTS.get(name, ())))
