"""StatsCollector against a fake backend and a fake cgroup tree (tests/unit/test_cgroups.py's FakeHost).

What is checked: one listing call per backend, PIDs from the listing or a locator,
first samples are None, restarts and disappearances become a status, a stopped
container is reported, errors of auto-detected backends are collected, of chosen
ones raised, and remote engines are refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from cman import stats, validate
from cman.backends.base import Backend, Feature
from cman.cgroups import CpuCounters
from cman.errors import ContainerNotFound, EngineUnavailable, Unsupported
from cman.models import Container, State
from cman.stats import Selection, StatsCollector

from .test_cgroups import SEC, FakeClock, FakeHost


class FakeBackend:
    """Just what the collector uses: a listing (with or without PIDs), inspect, init_pid."""

    def __init__(self, name: str, containers: list[Container], *, broken: Exception | None = None) -> None:
        self.name = name
        self.items = containers
        self.broken = broken
        self.listings = 0
        self.init_pid_calls: list[str] = []
        self.pids: dict[str, int] = {}

    def containers(self, *, all: bool = False) -> list[Container]:  # noqa: A002
        self.listings += 1
        if self.broken:
            raise self.broken
        return [c for c in self.items if all or c.state == State.RUNNING]

    def inspect(self, ref: str) -> Container:
        for c in self.items:
            if ref in (c.name, c.id):
                return c
        raise ContainerNotFound(ref, self.name)

    def init_pid(self, ref: str) -> int | None:
        self.init_pid_calls.append(ref)
        return self.pids.get(ref)

    def require(self, feature: Feature, why: str | None = None) -> None:
        """A local engine: every feature the collector asks for."""

    def features(self) -> frozenset[Feature]:
        return frozenset({Feature.CPU_STATS})

    def init_pids(self, containers: list[Container]) -> dict[str, int | None]:
        return Backend.init_pids(self, containers)  # type: ignore[arg-type]  # the contract's default


class FakeSource:
    def __init__(self, *backends: FakeBackend, explicit: str | None = None) -> None:
        self.backends = {b.name: b for b in backends}
        self.explicit = explicit

    def listing_backends(self) -> list[str]:
        return [self.explicit] if self.explicit else list(self.backends)

    def backend(self, name: str | None = None) -> FakeBackend:
        return self.backends[name or next(iter(self.backends))]

    def explicit_backend(self) -> str | None:
        return self.explicit


def ctr(backend: str, name: str, *, pid: int | None = None, managed: bool = True,
        state: State = State.RUNNING) -> Container:
    return Container(backend=backend, id=f"{name}-id", name=name, image="img", state=state, status="",
                     managed=managed, pid=pid)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    h = FakeHost(tmp_path, "hybrid")
    (tmp_path / "online").write_text("0-1\n")
    return h


def collector(host: FakeHost, source: FakeSource, selection: Selection | None = None,
              clock: FakeClock | None = None) -> StatsCollector:
    c = StatsCollector(source, selection, reader=host.reader(), clock=clock or FakeClock(), wall=lambda: 1000.0)  # type: ignore[arg-type]
    c.sampler._online_cpus = 2  # the fake host's CPUs
    return c


def busy(host: FakeHost, pid: int, cgroup: str, usage_s: float, user_s: float, sys_s: float) -> None:
    host.add_process(pid, v1=cgroup, v2=cgroup)
    host.set_v2(cgroup, int(usage_s * 1e6), int(user_s * 1e6), int(sys_s * 1e6))


def by_name(rows: Sequence[stats.ContainerStats]) -> dict[str, stats.ContainerStats]:
    return {r.name: r for r in rows}


def test_first_sample_is_unknown_then_rates(host: FakeHost) -> None:
    clock = FakeClock()
    backend = FakeBackend("lxd", [ctr("lxd", "web", pid=100)])
    c = collector(host, FakeSource(backend), clock=clock)
    busy(host, 100, "/lxc.payload.web", 10, 7, 3)
    first = c.tick().rows[0]
    assert first.status == "first" and first.cpu_percent is None and first.host_percent is None
    assert first.cpu_usage_ns == 10 * SEC
    clock.advance(2)
    busy(host, 100, "/lxc.payload.web", 12, 8.5, 3.5)
    row = c.tick().rows[0]
    assert row.status == "ok"
    assert row.cpu_percent == pytest.approx(100.0)
    assert row.cpu_user_percent == pytest.approx(75.0)
    assert row.cpu_system_percent == pytest.approx(25.0)
    assert row.host_percent == pytest.approx(50.0)
    assert row.interval_s == pytest.approx(2.0)
    assert row.cgroup_version == "v2" and row.cgroup == "/lxc.payload.web"
    assert backend.listings == 2, "one listing call per backend per tick"


def test_measure_waits_once_and_uses_one_listing(host: FakeHost) -> None:
    clock = FakeClock()
    backend = FakeBackend("lxc", [ctr("lxc", "a", pid=10), ctr("lxc", "b", pid=11)])
    busy(host, 10, "/lxc.payload.a", 1, 1, 0)
    busy(host, 11, "/lxc.payload.b", 1, 1, 0)
    c = collector(host, FakeSource(backend), clock=clock)

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        host.set_v2("/lxc.payload.a", int(1.5e6), int(1.5e6), 0)

    snap = c.measure(1.0, sleep=sleep)
    rows = by_name(snap.rows)
    assert rows["a"].cpu_percent == pytest.approx(50.0)
    assert rows["b"].cpu_percent == pytest.approx(0.0), "idle is a measured 0, not unknown"
    assert backend.listings == 1
    assert snap.backends == ("lxc",) and not snap.errors


class SlowListing(FakeBackend):
    """A listing that takes time, during which a container burns CPU."""

    def __init__(self, host: FakeHost, clock: FakeClock, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.host, self.clock = host, clock

    def containers(self, *, all: bool = False) -> list[Container]:  # noqa: A002
        self.host.set_v2("/lxc.payload.a", int(1.25e6), int(1.25e6), 0)  # 0.25 s of CPU while listing
        return super().containers(all=all)


def test_measure_reads_first_and_lists_during_the_interval(host: FakeHost) -> None:
    clock = FakeClock()
    backend = SlowListing(host, clock, "lxc", [ctr("lxc", "a", pid=10)])
    busy(host, 10, "/lxc.payload.a", 1, 1, 0)
    c = collector(host, FakeSource(backend), clock=clock)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    row = c.measure(1.0, sleep=sleep).rows[0]
    # the CPU used while the engine was listing counts: the first reading came before the listing
    assert (row.status, row.cpu_percent, row.interval_s) == ("ok", pytest.approx(25.0), pytest.approx(1.0))
    assert sleeps == [pytest.approx(1.0)], "one interval, the listing inside it"


def test_measure_reads_a_container_outside_the_parents_over_a_second_interval(host: FakeHost) -> None:
    clock = FakeClock()
    backend = FakeBackend("lxc", [ctr("lxc", "odd", pid=12)])
    busy(host, 12, "/elsewhere/odd", 1, 1, 0)
    c = collector(host, FakeSource(backend), clock=clock)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)
        host.set_v2("/elsewhere/odd", int(1.5e6) + int(0.5e6) * (len(sleeps) - 1), int(1.5e6), 0)

    row = c.measure(1.0, sleep=sleep).rows[0]
    assert (row.status, row.cpu_percent, row.interval_s) == ("ok", pytest.approx(50.0), pytest.approx(1.0))
    assert len(sleeps) == 2, "no early reading: read after the listing, then one more interval"


def test_default_is_running_managed_all_adds_others_and_stopped(host: FakeHost) -> None:
    items = [ctr("lxd", "mine", pid=1), ctr("lxd", "theirs", pid=2, managed=False),
             ctr("lxd", "off", state=State.STOPPED)]
    busy(host, 1, "/a", 1, 1, 0)
    busy(host, 2, "/b", 1, 1, 0)
    default = collector(host, FakeSource(FakeBackend("lxd", items))).tick()
    assert [r.name for r in default.rows] == ["mine"]
    everything = by_name(collector(host, FakeSource(FakeBackend("lxd", items)), Selection(all=True)).tick().rows)
    assert set(everything) == {"mine", "theirs", "off"}
    off = everything["off"]
    assert off.status == "stopped" and off.pid is None and off.cpu_percent is None and off.cpu_usage_ns is None


def test_named_refs_any_state_inspect_when_not_listed(host: FakeHost) -> None:
    backend = FakeBackend("lxd", [ctr("lxd", "web", pid=5, managed=False), ctr("lxd", "off", state=State.STOPPED)])
    busy(host, 5, "/w", 1, 1, 0)
    c = collector(host, FakeSource(backend), Selection(refs=(("lxd", "web"), ("lxd", "off"))))
    assert [r.name for r in c.tick().rows] == ["web", "off"]
    missing = collector(host, FakeSource(backend), Selection(refs=(("lxd", "nope"),)))
    with pytest.raises(ContainerNotFound):
        missing.tick()


def test_pids_missing_from_listing_use_init_pid_once_per_container(host: FakeHost) -> None:
    backend = FakeBackend("lxc", [ctr("lxc", "a"), ctr("lxc", "b")])
    backend.pids = {"a-id": 21}
    busy(host, 21, "/a", 1, 1, 0)
    rows = by_name(collector(host, FakeSource(backend)).tick().rows)
    assert rows["a"].pid == 21 and rows["a"].status == "first"
    assert rows["b"].status == "stopped", "no PID: nothing to account"
    assert sorted(backend.init_pid_calls) == ["a-id", "b-id"]


def test_docker_pids_come_from_containerd_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cman.backends.docker import DockerBackend, containers

    task = tmp_path / "moby"
    (task / "abc").mkdir(parents=True)
    (task / "abc" / "init.pid").write_text("4242")
    monkeypatch.setattr(containers, "DOCKER_TASK_DIRS", (tmp_path / "nowhere", task))
    backend = DockerBackend()
    asked: list[str] = []
    monkeypatch.setattr(backend, "init_pid", lambda ref: asked.append(ref) or 77)
    running = [Container("docker", "abc", "a", "img", State.RUNNING, "", True),
               Container("docker", "def", "b", "img", State.RUNNING, "", True),
               Container("docker", "ghi", "c", "img", State.STOPPED, "", True)]
    assert backend.init_pids(running) == {"abc": 4242, "def": 77, "ghi": None}
    assert asked == ["def"], "inspect only where the file is missing"


def test_restart_and_disappearance_are_statuses(host: FakeHost) -> None:
    clock = FakeClock()
    backend = FakeBackend("lxd", [ctr("lxd", "web", pid=100)])
    c = collector(host, FakeSource(backend), clock=clock)
    busy(host, 100, "/web", 5, 5, 0)
    c.tick()
    # restarted: new init PID, counters from zero
    host.remove_process(100)
    backend.items = [ctr("lxd", "web", pid=200)]
    busy(host, 200, "/web", 0.1, 0.1, 0)
    clock.advance(1)
    row = c.tick().rows[0]
    assert row.status == "restarted" and row.cpu_percent is None
    # gone between listing and reading
    host.remove_process(200)
    clock.advance(1)
    row = c.tick().rows[0]
    assert row.status == "gone" and row.cpu_percent is None and "gone" in row.note


def test_auto_detected_backend_errors_are_collected_chosen_ones_raised(host: FakeHost) -> None:
    down = FakeBackend("lxc", [], broken=EngineUnavailable("lxc", "not installed", "apt-get install lxc"))
    up = FakeBackend("lxd", [ctr("lxd", "web", pid=100)])
    busy(host, 100, "/web", 1, 1, 0)
    snap = collector(host, FakeSource(up, down)).tick()
    assert snap.backends == ("lxd",)
    assert "not installed" in snap.errors["lxc"]
    with pytest.raises(EngineUnavailable):
        collector(host, FakeSource(up, down, explicit="lxc")).tick()


def test_remote_engines_lack_cpu_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    from cman.backends.docker import DockerBackend
    from cman.backends.lxd import LxdBackend

    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2375")
    with pytest.raises(Unsupported, match=re.escape("DOCKER_HOST=tcp://10.0.0.1:2375")):
        DockerBackend().require(Feature.CPU_STATS)
    monkeypatch.setenv("CMAN_LXD_ENDPOINT", "https://10.0.0.1:8443")
    assert Feature.CPU_STATS not in LxdBackend().features()
    assert Feature.NO_ICC not in LxdBackend().features() and Feature.NO_ICC not in DockerBackend().features()
    monkeypatch.setenv("DOCKER_HOST", "")
    assert DockerBackend().locality().local, "an empty DOCKER_HOST is the local default, as for docker"
    monkeypatch.delenv("DOCKER_HOST")
    assert Feature.CPU_STATS in DockerBackend().features()
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    monkeypatch.setenv("CMAN_LXD_ENDPOINT", "https://localhost:8443")
    assert DockerBackend().locality().local and LxdBackend().locality().local, "loopback is this host"


def test_forgets_containers_that_left(host: FakeHost) -> None:
    backend = FakeBackend("lxd", [ctr("lxd", "a", pid=1), ctr("lxd", "b", pid=2)])
    busy(host, 1, "/a", 1, 1, 0)
    busy(host, 2, "/b", 1, 1, 0)
    c = collector(host, FakeSource(backend))
    c.tick()
    backend.items = [ctr("lxd", "a", pid=1)]
    c.tick()
    backend.items = [ctr("lxd", "a", pid=1), ctr("lxd", "b", pid=2)]
    rows = by_name(c.tick().rows)
    assert rows["b"].status == "first", "a container that comes back starts a new baseline"
    assert rows["a"].status == "ok"


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "nan", "inf", ""])
def test_parse_interval_rejects(bad: str) -> None:
    from cman.errors import InvalidValue

    with pytest.raises(InvalidValue, match="--interval"):
        validate.parse_interval(bad)


def test_parse_interval_accepts() -> None:
    assert validate.parse_interval("0.25") == 0.25
    assert validate.parse_interval("2") == 2.0


class FakeRemote(FakeBackend):
    """An engine on another host: no cgroup files, CPU counters from its API (usage only, as LXD)."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.usage: dict[str, int] = {}
        self.reads = 0

    def features(self) -> frozenset[Feature]:
        return frozenset({Feature.API_CPU_STATS})

    def require(self, feature: Feature, why: str | None = None) -> None:
        raise AssertionError(f"a remote engine was asked for {feature}")

    def init_pids(self, containers: list[Container]) -> dict[str, int | None]:
        raise AssertionError("a remote engine's PIDs mean nothing here")

    def cpu_counters(self, ids: list[str]) -> dict[str, CpuCounters | None]:
        self.reads += 1
        return {i: CpuCounters(self.usage[i], None, None, "lxd-api", "", Path()) if i in self.usage else None
                for i in ids}


def test_a_remote_engine_is_sampled_through_its_api(host: FakeHost) -> None:
    clock = FakeClock()
    remote = FakeRemote("lxd", [ctr("lxd", "far"), ctr("lxd", "gone")])
    remote.usage = {"far-id": 10 * SEC, "gone-id": SEC}
    c = collector(host, FakeSource(remote), clock=clock)

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        remote.usage = {"far-id": int(10.5 * SEC)}  # "gone" stopped during the interval

    rows = by_name(c.measure(1.0, sleep=sleep).rows)
    far = rows["far"]
    assert (far.status, far.cpu_percent, far.pid, far.cgroup_version) == ("ok", pytest.approx(50.0), None, "lxd-api")
    assert far.cpu_user_percent is None and far.cpu_system_percent is None, "no split: unknown, never 0"
    assert rows["gone"].status == "gone" and rows["gone"].cpu_percent is None
    assert remote.reads == 2, "two API readings, one interval apart"
