"""Unit tests for cman.cgroups against fake /proc and /sys/fs/cgroup trees.

Each test builds the files a kernel would show under tmp_path, so the parsing,
unit conversions, fallbacks and rate maths run without any container engine.
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from cman.cgroups import (
    CgroupError,
    CgroupLayout,
    CgroupReader,
    CgroupUnreadable,
    CgroupWarning,
    CpuSampler,
    ProcessGone,
    SampleStatus,
    _fs,
    counters,
    detect_layout,
    find_mounts,
    online_cpu_count,
    parse_cpu_list,
    parse_mounts,
    parse_proc_cgroup,
    read_v1_counters,
    read_v2_counters,
    resolve_cgroups,
    sample_once,
)
from cman.errors import CmanError, ExitCode

SEC = 1_000_000_000

# This host's /proc/self/mounts, cgroup lines (hybrid, separate cpu and cpuacct).
HYBRID_MOUNTS = """\
tmpfs {root} tmpfs rw,relatime,mode=755 0 0
cgroup {root}/cpu cgroup rw,relatime,cpu 0 0
cgroup {root}/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup {root}/memory cgroup rw,relatime,memory 0 0
cgroup {root}/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 {root}/unified cgroup2 rw,relatime 0 0
"""

# A typical Debian 10 / Ubuntu 18.04 v1 host: cpu and cpuacct co-mounted.
V1_MOUNTS = """\
cgroup {root}/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0
cgroup {root}/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup {root}/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
"""

V2_MOUNTS = "cgroup2 {root} cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n"


class FakeHost:
    """A fake /proc and /sys/fs/cgroup under tmp_path."""

    def __init__(self, tmp_path: Path, layout: str, *, with_mounts: bool = True) -> None:
        self.proc = tmp_path / "proc"
        self.root = tmp_path / "sys" / "fs" / "cgroup"
        self.root.mkdir(parents=True)
        (self.proc / "self").mkdir(parents=True)
        self.layout = layout
        self.v1_cpuacct: Path | None
        self.v2: Path | None
        if layout == "hybrid":
            for name in ("cpu", "cpuacct", "memory", "systemd"):
                self._v1_hierarchy(self.root / name)
            self._v2_hierarchy(self.root / "unified")
            self.v1_cpuacct, self.v2 = self.root / "cpuacct", self.root / "unified"
            text, self.v1_line = HYBRID_MOUNTS, "2:cpuacct:{path}"
        elif layout == "v1":
            self._v1_hierarchy(self.root / "cpu,cpuacct")
            (self.root / "cpu").symlink_to("cpu,cpuacct")
            (self.root / "cpuacct").symlink_to("cpu,cpuacct")
            self._v1_hierarchy(self.root / "memory")
            self._v1_hierarchy(self.root / "systemd")
            self.v1_cpuacct, self.v2 = self.root / "cpu,cpuacct", None
            text, self.v1_line = V1_MOUNTS, "4:cpu,cpuacct:{path}"
        else:
            self._v2_hierarchy(self.root)
            self.v1_cpuacct, self.v2 = None, self.root
            text, self.v1_line = V2_MOUNTS, ""
        if with_mounts:
            (self.proc / "self" / "mounts").write_text(text.format(root=self.root))

    @staticmethod
    def _v1_hierarchy(path: Path) -> None:
        path.mkdir()
        (path / "cgroup.procs").write_text("")

    @staticmethod
    def _v2_hierarchy(path: Path) -> None:
        path.mkdir(exist_ok=True)
        (path / "cgroup.procs").write_text("")
        (path / "cgroup.controllers").write_text("cpu memory\n")

    def reader(self) -> CgroupReader:
        return CgroupReader(root=self.root, proc_root=self.proc)

    def add_process(self, pid: int, v1: str | None = "/", v2: str | None = "/") -> None:
        lines = ["9:name=systemd:/init.scope", "5:memory:/mem/elsewhere"]
        if v1 is not None and self.v1_line:
            lines.append(self.v1_line.format(path=v1))
        if v2 is not None and self.layout != "v1":
            lines.append(f"0::{v2}")
        (self.proc / str(pid)).mkdir(exist_ok=True)
        (self.proc / str(pid) / "cgroup").write_text("\n".join(lines) + "\n")

    def remove_process(self, pid: int) -> None:
        (self.proc / str(pid) / "cgroup").unlink()
        (self.proc / str(pid)).rmdir()

    def set_v1(
        self,
        cgroup: str,
        usage_ns: int,
        user_ns: int | None = None,
        sys_ns: int | None = None,
        *,
        stat_ticks: tuple[int, int] | None = None,
    ) -> Path:
        assert self.v1_cpuacct is not None
        d = self.v1_cpuacct / cgroup.strip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpuacct.usage").write_text(f"{usage_ns}\n")
        if user_ns is not None:
            (d / "cpuacct.usage_user").write_text(f"{user_ns}\n")
        if sys_ns is not None:
            (d / "cpuacct.usage_sys").write_text(f"{sys_ns}\n")
        if stat_ticks is not None:
            (d / "cpuacct.stat").write_text(f"user {stat_ticks[0]}\nsystem {stat_ticks[1]}\n")
        return d

    def set_v2(
        self, cgroup: str, usage_usec: int, user_usec: int | None, system_usec: int | None
    ) -> Path:
        assert self.v2 is not None
        d = self.v2 / cgroup.strip("/")
        d.mkdir(parents=True, exist_ok=True)
        lines = [f"usage_usec {usage_usec}"]
        if user_usec is not None:
            lines.append(f"user_usec {user_usec}")
        if system_usec is not None:
            lines.append(f"system_usec {system_usec}")
        lines += ["nr_periods 0", "nr_throttled 0", "throttled_usec 0"]
        (d / "cpu.stat").write_text("\n".join(lines) + "\n")
        return d


class FakeClock:
    """An injectable monotonic clock in nanoseconds."""

    def __init__(self, start: int = 1_000 * SEC) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SEC)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees the 'warn once' warnings afresh."""
    monkeypatch.setattr(counters, "_warned", set())
    yield


@pytest.fixture
def hybrid(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path, "hybrid")


@pytest.fixture
def v1(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path, "v1")


@pytest.fixture
def v2(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path, "v2")


def deny(monkeypatch: pytest.MonkeyPatch, suffix: str, exc: OSError) -> None:
    """Make the module's single file reader fail for paths ending in `suffix`."""
    real = _fs.read_text

    def fake(path: Path) -> str:
        if str(path).endswith(suffix):
            raise exc
        return real(path)

    monkeypatch.setattr(_fs, "read_text", fake)


# --- layout -----------------------------------------------------------------


def test_parse_mounts_hybrid_like_this_host() -> None:
    root = Path("/sys/fs/cgroup")
    mounts = parse_mounts(HYBRID_MOUNTS.format(root=root), root)
    assert mounts is not None
    assert mounts.layout is CgroupLayout.HYBRID
    assert mounts.v1["cpuacct"] == root / "cpuacct"
    assert mounts.v1["cpu"] == root / "cpu"
    assert mounts.v2 == root / "unified"
    assert "systemd" not in mounts.v1 and "name=systemd" not in mounts.v1


def test_parse_mounts_v1_comma_joined() -> None:
    root = Path("/sys/fs/cgroup")
    mounts = parse_mounts(V1_MOUNTS.format(root=root), root)
    assert mounts is not None
    assert mounts.layout is CgroupLayout.V1
    assert mounts.v1["cpuacct"] == mounts.v1["cpu"] == root / "cpu,cpuacct"
    assert mounts.v2 is None


def test_parse_mounts_pure_v2() -> None:
    root = Path("/sys/fs/cgroup")
    mounts = parse_mounts(V2_MOUNTS.format(root=root), root)
    assert mounts is not None
    assert mounts.layout is CgroupLayout.V2
    assert mounts.v2 == root
    assert not mounts.v1


def test_parse_mounts_ignores_mounts_outside_root_and_name_only_hierarchies() -> None:
    text = (
        "cgroup /var/lib/lxc/c1/rootfs/sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\n"
        "cgroup /sys/fs/cgroup/systemd cgroup rw,name=systemd 0 0\n"
        "garbage line\n"
    )
    assert parse_mounts(text, Path("/sys/fs/cgroup")) is None


def test_parse_mounts_unescapes_octal() -> None:
    root = Path("/tmp/my cgroups")
    mounts = parse_mounts("cgroup2 /tmp/my\\040cgroups cgroup2 rw 0 0\n", root)
    assert mounts is not None and mounts.v2 == root


@pytest.mark.parametrize(
    ("layout", "expected"),
    [("hybrid", CgroupLayout.HYBRID), ("v1", CgroupLayout.V1), ("v2", CgroupLayout.V2)],
)
def test_detect_layout_from_mounts_file(tmp_path: Path, layout: str, expected: CgroupLayout) -> None:
    host = FakeHost(tmp_path, layout)
    assert detect_layout(host.root, host.proc) is expected
    assert find_mounts(host.root, host.proc).source == "mounts"


@pytest.mark.parametrize(
    ("layout", "expected"),
    [("hybrid", CgroupLayout.HYBRID), ("v1", CgroupLayout.V1), ("v2", CgroupLayout.V2)],
)
def test_detect_layout_probes_files_without_mounts(
    tmp_path: Path, layout: str, expected: CgroupLayout
) -> None:
    host = FakeHost(tmp_path, layout, with_mounts=False)
    mounts = find_mounts(host.root, host.proc)
    assert mounts.layout is expected
    assert mounts.source == "probe"
    if host.v1_cpuacct is not None:
        assert mounts.v1["cpuacct"].resolve() == host.v1_cpuacct.resolve()
    assert mounts.v2 == host.v2


def test_detect_layout_probes_when_mounts_unreadable(
    hybrid: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    deny(monkeypatch, "self/mounts", PermissionError(errno.EACCES, "Permission denied"))
    mounts = find_mounts(hybrid.root, hybrid.proc)
    assert (mounts.layout, mounts.source) == (CgroupLayout.HYBRID, "probe")


def test_detect_layout_without_any_cgroup_raises(tmp_path: Path) -> None:
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "mounts").write_text("proc /proc proc rw 0 0\n")
    (tmp_path / "cg").mkdir()
    with pytest.raises(CgroupError, match="no cgroup filesystem found"):
        detect_layout(tmp_path / "cg", tmp_path / "proc")


# --- /proc/PID/cgroup -----------------------------------------------------------


def test_parse_proc_cgroup_picks_cpuacct_and_v2_lines() -> None:
    text = (
        "12:cpu,cpuacct:/lxc.payload.web\n"
        "3:cpuset:/lxc.payload.web\n"
        "1:name=systemd:/lxc.monitor.web\n"
        "0::/lxc.payload.web/init:odd\n"
    )
    found = parse_proc_cgroup(42, text)
    assert found.v1_cpuacct == "/lxc.payload.web"
    assert found.v2 == "/lxc.payload.web/init:odd"  # a ':' in the path survives


def test_parse_proc_cgroup_separate_cpuacct_and_no_v2() -> None:
    found = parse_proc_cgroup(7, "2:cpuacct:/docker/abc\n1:cpu:/docker/abc\n")
    assert (found.v1_cpuacct, found.v2) == ("/docker/abc", None)


def test_resolve_cgroups_missing_process_is_gone(hybrid: FakeHost) -> None:
    with pytest.raises(ProcessGone) as info:
        resolve_cgroups(999, hybrid.proc)
    assert info.value.pid == 999


def test_resolve_cgroups_esrch_mid_read_is_gone(
    hybrid: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    hybrid.add_process(5)
    deny(monkeypatch, "5/cgroup", ProcessLookupError(errno.ESRCH, "No such process"))
    with pytest.raises(ProcessGone):
        resolve_cgroups(5, hybrid.proc)


def test_resolve_cgroups_permission_denied_is_unreadable(
    hybrid: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    hybrid.add_process(5)
    deny(monkeypatch, "5/cgroup", PermissionError(errno.EACCES, "Permission denied"))
    with pytest.raises(CgroupUnreadable) as info:
        resolve_cgroups(5, hybrid.proc)
    assert info.value.path == hybrid.proc / "5" / "cgroup"
    assert "permission denied" in info.value.reason


# --- counters -------------------------------------------------------------------


def test_read_v1_counters_nanoseconds(v1: FakeHost) -> None:
    d = v1.set_v1("/lxc.payload.a", 3 * SEC + 5, 2 * SEC, SEC)
    c = read_v1_counters(d, "/lxc.payload.a")
    assert (c.usage_ns, c.user_ns, c.system_ns, c.source) == (3 * SEC + 5, 2 * SEC, SEC, "v1")
    assert (c.cgroup, c.directory) == ("/lxc.payload.a", d)


def test_read_v1_falls_back_to_cpuacct_stat_ticks_with_one_warning(v1: FakeHost) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    d = v1.set_v1("/old", 5 * SEC, stat_ticks=(3 * hz, hz // 2))
    with pytest.warns(CgroupWarning, match=r"cpuacct\.stat"):
        c = read_v1_counters(d)
    assert (c.usage_ns, c.user_ns, c.system_ns) == (5 * SEC, 3 * SEC, SEC // 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_v1_counters(d)  # warned once already: no second warning


def test_read_v1_without_user_system_anywhere_gives_none(v1: FakeHost) -> None:
    d = v1.set_v1("/bare", 5 * SEC)
    with pytest.warns(CgroupWarning, match="None"):
        c = read_v1_counters(d)
    assert (c.usage_ns, c.user_ns, c.system_ns) == (5 * SEC, None, None)


def test_read_v2_counters_microseconds_to_nanoseconds(v2: FakeHost) -> None:
    d = v2.set_v2("/docker/abc", 1_500_000, 1_000_000, 500_000)
    c = read_v2_counters(d, "/docker/abc")
    assert (c.usage_ns, c.user_ns, c.system_ns, c.source) == (
        3 * SEC // 2,
        SEC,
        SEC // 2,
        "v2",
    )


def test_read_v2_missing_user_system_fields_are_none(v2: FakeHost) -> None:
    d = v2.set_v2("/x", 7, None, None)
    with pytest.warns(CgroupWarning, match="user_usec"):
        c = read_v2_counters(d)
    assert (c.usage_ns, c.user_ns, c.system_ns) == (7000, None, None)


def test_read_v2_without_usage_usec_is_unreadable(v2: FakeHost) -> None:
    d = v2.root / "x"
    d.mkdir()
    (d / "cpu.stat").write_text("nr_periods 0\n")
    with pytest.raises(CgroupUnreadable, match="usage_usec"):
        read_v2_counters(d)


def test_garbage_counter_is_unreadable(v1: FakeHost) -> None:
    d = v1.set_v1("/g", 0, 0, 0)
    (d / "cpuacct.usage").write_text("not a number\n")
    with pytest.raises(CgroupUnreadable, match="expected an integer"):
        read_v1_counters(d)


def test_missing_cgroup_directory_is_unreadable_with_path(hybrid: FakeHost) -> None:
    hybrid.add_process(10, v1="/gone", v2="/gone")
    with pytest.raises(CgroupUnreadable) as info:
        hybrid.reader().read(10, "v2")
    assert info.value.path == hybrid.root / "unified" / "gone" / "cpu.stat"
    assert "missing" in info.value.reason
    with pytest.raises(CgroupUnreadable) as info:
        hybrid.reader().read(10)  # auto tried v2, then v1: both gone
    assert info.value.path == hybrid.root / "cpuacct" / "gone" / "cpuacct.usage"


def test_directory_where_file_expected_is_unreadable(v1: FakeHost) -> None:
    assert v1.v1_cpuacct is not None
    d = v1.v1_cpuacct / "weird"
    (d / "cpuacct.usage").mkdir(parents=True)
    with pytest.raises(CgroupUnreadable, match="is a directory"):
        read_v1_counters(d)


def test_permission_error_is_unreadable(v1: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    v1.add_process(10, v1="/c")
    v1.set_v1("/c", 1, 1, 0)
    deny(monkeypatch, "cpuacct.usage", PermissionError(errno.EACCES, "Permission denied"))
    with pytest.raises(CgroupUnreadable) as info:
        v1.reader().read(10)
    assert info.value.path.name == "cpuacct.usage"
    assert info.value.errno == errno.EACCES
    assert "permission denied" in str(info.value)


def test_errors_join_cmans_error_family() -> None:
    assert issubclass(CgroupError, CmanError)
    assert ProcessGone(1).exit_code is ExitCode.NOT_FOUND
    assert CgroupUnreadable(Path("/x"), "why").exit_code is ExitCode.UNAVAILABLE


# --- reader: which hierarchy --------------------------------------------------------


def test_auto_prefers_v2_on_hybrid_and_both_can_be_forced(hybrid: FakeHost) -> None:
    hybrid.add_process(10, v1="/docker/abc", v2="/docker/abc")
    hybrid.set_v1("/docker/abc", 2 * SEC, SEC, SEC)
    hybrid.set_v2("/docker/abc", 3_000_000, 2_000_000, 1_000_000)
    reader = hybrid.reader()
    assert reader.layout is CgroupLayout.HYBRID
    assert reader.read(10).source == "v2"
    assert reader.read(10).usage_ns == 3 * SEC
    assert reader.read(10, "v1").usage_ns == 2 * SEC
    assert reader.read(10, "v2").directory == hybrid.root / "unified" / "docker" / "abc"


def test_auto_does_not_read_v2_root_when_v1_has_the_container(hybrid: FakeHost) -> None:
    """A v1-only manager leaves the process at the v2 root: that is the whole host."""
    hybrid.add_process(10, v1="/lxc.payload.c1", v2="/")
    hybrid.set_v1("/lxc.payload.c1", SEC, SEC, 0)
    hybrid.set_v2("/", 999_000_000, 1, 1)
    c = hybrid.reader().read(10)
    assert (c.source, c.cgroup, c.usage_ns) == ("v1", "/lxc.payload.c1", SEC)


def test_auto_falls_back_to_v1_when_v2_has_no_cpu_stat(hybrid: FakeHost) -> None:
    hybrid.add_process(10, v1="/c", v2="/c")
    hybrid.set_v1("/c", SEC, SEC, 0)
    (hybrid.root / "unified" / "c").mkdir()  # pre-4.15 kernel: no core cpu.stat
    assert hybrid.reader().read(10).source == "v1"
    with pytest.raises(CgroupUnreadable, match="missing"):
        hybrid.reader().read(10, "v2")


def test_forcing_v2_on_a_v1_host_says_why(v1: FakeHost) -> None:
    v1.add_process(10, v1="/c")
    with pytest.raises(CgroupUnreadable, match="no cgroup v2 hierarchy"):
        v1.reader().read(10, "v2")


def test_forcing_v1_on_a_v2_host_says_why(v2: FakeHost) -> None:
    v2.add_process(10, v2="/c")
    with pytest.raises(CgroupUnreadable, match="no cgroup v1 cpuacct hierarchy"):
        v2.reader().read(10, "v1")


def test_comma_joined_v1_mount_reads_through(v1: FakeHost) -> None:
    v1.add_process(10, v1="/lxc.payload.c1")
    v1.set_v1("/lxc.payload.c1", 4 * SEC, 3 * SEC, SEC)
    c = v1.reader().read(10)
    assert (c.source, c.usage_ns) == ("v1", 4 * SEC)
    assert c.directory == v1.root / "cpu,cpuacct" / "lxc.payload.c1"


# --- sampler ----------------------------------------------------------------------


def make_sampler(host: FakeHost, clock: FakeClock, **kw: object) -> CpuSampler[str]:
    return CpuSampler(reader=host.reader(), clock=clock, online_cpus=2, **kw)  # type: ignore[arg-type]


def test_first_sample_has_no_rates(v2: FakeHost) -> None:
    v2.add_process(10, v2="/c")
    v2.set_v2("/c", 1_000_000, 600_000, 400_000)
    s = make_sampler(v2, FakeClock()).sample("c", 10)
    assert s.status is SampleStatus.FIRST
    assert s.cpu_percent is None and s.host_percent is None
    assert s.cpu_user_percent is None and s.cpu_system_percent is None
    assert s.interval_ns is None
    assert (s.usage_ns, s.user_ns, s.system_ns) == (SEC, 600_000_000, 400_000_000)


def test_rates_with_injected_clock(v2: FakeHost) -> None:
    v2.add_process(10, v2="/c")
    v2.set_v2("/c", 1_000_000, 600_000, 400_000)
    clock = FakeClock()
    sampler = make_sampler(v2, clock)
    sampler.sample("c", 10)
    clock.advance(2.0)
    # 3 s of CPU in 2 s of wall time: 150 % (1.5 CPUs), 75 % of a 2-CPU host.
    v2.set_v2("/c", 4_000_000, 2_600_000, 1_400_000)
    s = sampler.sample("c", 10)
    assert s.status is SampleStatus.OK
    assert s.interval_ns == 2 * SEC
    assert s.cpu_percent == pytest.approx(150.0)
    assert s.cpu_user_percent == pytest.approx(100.0)
    assert s.cpu_system_percent == pytest.approx(50.0)
    assert s.host_percent == pytest.approx(75.0)
    assert s.online_cpus == 2
    assert s.timestamp_ns == clock.now


def test_idle_container_reads_zero_not_none(v1: FakeHost) -> None:
    v1.add_process(10, v1="/c")
    v1.set_v1("/c", SEC, SEC, 0)
    clock = FakeClock()
    sampler = make_sampler(v1, clock)
    sampler.sample("c", 10)
    clock.advance(1)
    s = sampler.sample("c", 10)
    assert (s.status, s.cpu_percent, s.host_percent) == (SampleStatus.OK, 0.0, 0.0)


def test_counters_going_backwards_reset_the_baseline(v1: FakeHost) -> None:
    v1.add_process(10, v1="/c")
    v1.set_v1("/c", 50 * SEC, 40 * SEC, 10 * SEC)
    clock = FakeClock()
    sampler = make_sampler(v1, clock)
    sampler.sample("c", 10)
    clock.advance(1)
    v1.set_v1("/c", SEC // 10, SEC // 10, 0)  # restarted: a fresh cgroup
    s = sampler.sample("c", 10)
    assert s.status is SampleStatus.RESTARTED
    assert s.cpu_percent is None
    assert "backwards" in s.note
    clock.advance(1)
    v1.set_v1("/c", SEC // 10 + SEC // 2, SEC // 10 + SEC // 2, 0)
    s = sampler.sample("c", 10)
    assert s.status is SampleStatus.OK
    assert s.cpu_percent == pytest.approx(50.0)


def test_new_init_pid_resets_the_baseline(v1: FakeHost) -> None:
    v1.add_process(10, v1="/c")
    v1.add_process(11, v1="/c")
    v1.set_v1("/c", SEC, SEC, 0)
    clock = FakeClock()
    sampler = make_sampler(v1, clock)
    sampler.sample("c", 10)
    clock.advance(1)
    v1.set_v1("/c", 2 * SEC, 2 * SEC, 0)
    s = sampler.sample("c", 11)
    assert (s.status, s.cpu_percent) == (SampleStatus.RESTARTED, None)
    assert "PID changed" in s.note


def test_moved_cgroup_resets_the_baseline(hybrid: FakeHost) -> None:
    hybrid.add_process(10, v1="/a", v2="/a")
    hybrid.set_v2("/a", 5_000_000, 5_000_000, 0)
    hybrid.set_v2("/b", 9_000_000, 9_000_000, 0)
    clock = FakeClock()
    sampler = make_sampler(hybrid, clock)
    sampler.sample("c", 10)
    hybrid.add_process(10, v1="/b", v2="/b")
    clock.advance(1)
    s = sampler.sample("c", 10)
    assert (s.status, s.cpu_percent, s.cgroup) == (SampleStatus.RESTARTED, None, "/b")


def test_process_gone_is_a_status_not_a_crash(v2: FakeHost) -> None:
    v2.add_process(10, v2="/c")
    v2.set_v2("/c", 1, 1, 0)
    clock = FakeClock()
    sampler = make_sampler(v2, clock)
    sampler.sample("c", 10)
    v2.remove_process(10)
    clock.advance(1)
    s = sampler.sample("c", 10)
    assert s.status is SampleStatus.GONE
    assert (s.cpu_percent, s.usage_ns, s.pid) == (None, None, 10)
    assert "gone" in s.note
    v2.add_process(10, v2="/c")  # same key comes back: a fresh baseline
    assert sampler.sample("c", 10).status is SampleStatus.FIRST


def test_unreadable_is_a_status_and_keeps_the_baseline(
    v2: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    v2.add_process(10, v2="/c")
    v2.set_v2("/c", 0, 0, 0)
    clock = FakeClock()
    sampler = make_sampler(v2, clock)
    sampler.sample("c", 10)
    clock.advance(1)
    with monkeypatch.context() as m:
        deny(m, "cpu.stat", PermissionError(errno.EACCES, "Permission denied"))
        s = sampler.sample("c", 10)
    assert (s.status, s.cpu_percent) == (SampleStatus.UNREADABLE, None)
    assert "permission denied" in s.note
    clock.advance(1)
    v2.set_v2("/c", 1_000_000, 1_000_000, 0)
    s = sampler.sample("c", 10)
    assert s.status is SampleStatus.OK
    assert s.cpu_percent == pytest.approx(50.0)  # 1 s of CPU over both seconds


def test_no_elapsed_time_gives_no_rate(v2: FakeHost) -> None:
    v2.add_process(10, v2="/c")
    v2.set_v2("/c", 0, 0, 0)
    clock = FakeClock()
    sampler = make_sampler(v2, clock)
    sampler.sample("c", 10)
    s = sampler.sample("c", 10)
    assert (s.status, s.cpu_percent) == (SampleStatus.OK, None)
    clock.advance(1)
    v2.set_v2("/c", 250_000, 0, 250_000)
    s = sampler.sample("c", 10)
    assert s.cpu_percent == pytest.approx(25.0)
    assert s.cpu_system_percent == pytest.approx(25.0)


def test_user_system_unknown_stay_none_in_rates(v2: FakeHost) -> None:
    v2.add_process(10, v2="/c")
    v2.set_v2("/c", 0, None, None)
    clock = FakeClock()
    sampler = make_sampler(v2, clock)
    with pytest.warns(CgroupWarning):
        sampler.sample("c", 10)
    clock.advance(1)
    v2.set_v2("/c", 500_000, None, None)
    s = sampler.sample("c", 10)
    assert s.cpu_percent == pytest.approx(50.0)
    assert (s.cpu_user_percent, s.cpu_system_percent) == (None, None)


def test_forget_drops_the_baseline(v2: FakeHost) -> None:
    v2.add_process(10, v2="/c")
    v2.set_v2("/c", 0, 0, 0)
    sampler = make_sampler(v2, FakeClock())
    sampler.sample("c", 10)
    sampler.forget("c")
    assert sampler.sample("c", 10).status is SampleStatus.FIRST


def test_sample_once_reads_sleeps_reads(hybrid: FakeHost) -> None:
    hybrid.add_process(10, v1="/a", v2="/a")
    hybrid.add_process(20, v1="/b", v2="/b")
    hybrid.set_v2("/a", 0, 0, 0)
    hybrid.set_v2("/b", 0, 0, 0)
    clock = FakeClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)
        hybrid.set_v2("/a", 500_000, 400_000, 100_000)
        hybrid.remove_process(20)

    out = sample_once(
        {"a": 10, "b": 20, "c": 30}, 0.5, reader=hybrid.reader(), clock=clock, sleep=sleep
    )
    assert slept == [0.5]
    assert out["a"].status is SampleStatus.OK
    assert out["a"].cpu_percent == pytest.approx(100.0)
    assert out["a"].cpu_user_percent == pytest.approx(80.0)
    assert out["b"].status is SampleStatus.GONE
    assert out["c"].status is SampleStatus.GONE


# --- online CPUs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count"), [("0-1\n", 2), ("0\n", 1), ("0-3,8,10-11\n", 7), ("", 0)]
)
def test_parse_cpu_list(text: str, count: int) -> None:
    assert parse_cpu_list(text) == count


def test_online_cpu_count_reads_the_file_and_falls_back(tmp_path: Path) -> None:
    online = tmp_path / "online"
    online.write_text("0-5\n")
    assert online_cpu_count(online) == 6
    assert online_cpu_count(tmp_path / "missing") == len(os.sched_getaffinity(0))


def test_sampler_looks_up_online_cpus_once(v2: FakeHost, tmp_path: Path) -> None:
    online = tmp_path / "online"
    online.write_text("0-3\n")
    v2.add_process(10, v2="/c")
    v2.set_v2("/c", 0, 0, 0)
    clock = FakeClock()
    sampler: CpuSampler[str] = CpuSampler(
        reader=v2.reader(), clock=clock, cpu_online_path=online
    )
    sampler.sample("c", 10)
    online.write_text("0-7\n")
    clock.advance(1)
    v2.set_v2("/c", 2_000_000, 2_000_000, 0)
    s = sampler.sample("c", 10)
    assert (s.online_cpus, s.cpu_percent, s.host_percent) == (4, 200.0, 50.0)
