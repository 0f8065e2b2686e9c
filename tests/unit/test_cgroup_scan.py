"""cman.cgroups.scan on a fake /proc and cgroup tree: the monitor titles of liblxc, which
LXC path a monitor belongs to, and the early readings under the engines' parents (the
integration tests check the same against the real engines)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cman.cgroups import scan

from .test_cgroups import FakeHost


@pytest.mark.parametrize(("cmdline", "parsed"), [
    (b"[lxc monitor] /var/lib/lxc web\0", ("/var/lib/lxc", "web")),
    (b"[lxc monitor] /var/lib/lxd/containers db", ("/var/lib/lxd/containers", "db")),
    (b"[lxc monitor] /srv/my lxc/path web-1\0", ("/srv/my lxc/path", "web-1")),  # a path with a space
    (b"[lxc monitor] web\0", None),  # no path
    (b"/usr/bin/lxc-start -n web\0", None),
    (b"", None),
])
def test_monitor_titles(cmdline: bytes, parsed: tuple[str, str] | None) -> None:
    assert scan.parse_monitor_title(cmdline) == parsed


def _monitor(host: FakeHost, pid: int, title: str, children: str, cgroup: str) -> None:
    task = host.proc / str(pid) / "task" / str(pid)
    task.mkdir(parents=True)
    (host.proc / str(pid) / "cmdline").write_bytes(title.encode() + b"\0")
    (task / "children").write_text(children)
    assert host.v1_cpuacct is not None
    group = host.v1_cpuacct / cgroup
    group.mkdir()
    (group / "cgroup.procs").write_text(f"{pid}\n")


def test_monitors_tell_lxd_from_lxc_by_their_path(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, "hybrid")
    _monitor(host, 100, "[lxc monitor] /var/lib/lxc web", "101 ", "lxc.monitor.web")
    _monitor(host, 200, "[lxc monitor] /var/lib/lxd/containers web", "201 ", "lxc.monitor.web-1")
    _monitor(host, 300, "[lxc monitor] /var/lib/lxc starting", "", "lxc.monitor.starting")  # no init yet
    _monitor(host, 400, "sleep 100", "401 ", "lxc.monitor.impostor")  # not liblxc's monitor
    assert scan.lxc_monitors(host.reader()) == {
        ("/var/lib/lxc", "web"): 101,
        ("/var/lib/lxd/containers", "web"): 201,
        ("/var/lib/lxc", "starting"): None,
    }


def test_a_monitor_that_exits_while_it_is_read_is_left_out(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, "hybrid")
    assert host.v1_cpuacct is not None
    (host.v1_cpuacct / "lxc.monitor.gone").mkdir()
    (host.v1_cpuacct / "lxc.monitor.gone" / "cgroup.procs").write_text("999\n")  # no /proc/999
    assert scan.lxc_monitors(host.reader()) == {}


def test_early_readings_cover_the_parents_only(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, "hybrid")
    for cgroup in ("/lxc.payload.web", "/docker/abc", "/elsewhere"):
        host.add_process(1, v1=cgroup, v2=cgroup)
        host.set_v2(cgroup, 5_000_000, 3_000_000, 2_000_000)
    ticks = iter(range(10, 100))
    early = scan.read_parents(host.reader(), ["lxc.payload.*", "docker/*"], clock=lambda: next(ticks))
    v2 = {k: v for k, v in early.items() if k[0] == "v2"}
    assert sorted(v2) == [("v2", "/docker/abc"), ("v2", "/lxc.payload.web")]
    when, counters = v2[("v2", "/lxc.payload.web")]
    assert when >= 10 and (counters.usage_ns, counters.user_ns, counters.source) == (5_000_000_000, 3_000_000_000, "v2")
