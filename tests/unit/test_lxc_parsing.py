"""Parsing and config building of the LXC backend, without LXC."""

from __future__ import annotations

from pathlib import Path

import pytest

from cman._sys import files as _lxc_fs
from cman._sys.times import ago
from cman.backends.lxc import config, tools
from cman.cgroups import CgroupLayout, CgroupMounts
from cman.errors import Unsupported

# -- lxc-info / lxc-ls ------------------------------------------------------------------


def test_parse_info_running() -> None:
    text = "State:          RUNNING\nPID:            16294\n"
    assert tools.parse_info(text) == ("RUNNING", 16294)


def test_parse_info_stopped_has_no_pid() -> None:
    assert tools.parse_info("State:          STOPPED\n") == ("STOPPED", None)


def test_parse_info_ignores_other_lines() -> None:
    text = "Name:  x\nState: FROZEN\nPID: 7\nCPU use: 0.01 seconds\nMemory use: 884.00 KiB\n"
    assert tools.parse_info(text) == ("FROZEN", 7)


# -- limits on each cgroup layout ------------------------------------------------------------


def _v2(tmp_path: Path, controllers: str) -> Path:
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    return root


def test_limits_v1(tmp_path: Path) -> None:
    mounts = CgroupMounts(CgroupLayout.V1, v1={"cpu": tmp_path / "cpu", "memory": tmp_path / "memory"})
    assert config.limit_settings(0.5, 64 * 1024 * 1024, mounts) == [
        ("lxc.cgroup.cpu.cfs_period_us", "100000"),
        ("lxc.cgroup.cpu.cfs_quota_us", "50000"),
        ("lxc.cgroup.memory.limit_in_bytes", str(64 * 1024 * 1024)),
    ]


def test_limits_v2(tmp_path: Path) -> None:
    mounts = CgroupMounts(CgroupLayout.V2, v2=_v2(tmp_path, "cpuset cpu io memory pids"))
    assert config.limit_settings(1.5, 1000, mounts) == [
        ("lxc.cgroup2.cpu.max", "150000 100000"),
        ("lxc.cgroup2.memory.max", "1000"),
    ]


def test_limits_hybrid_prefers_the_hierarchy_holding_the_controller(tmp_path: Path) -> None:
    """This machine: cpu and memory on v1, a v2 tree with no controllers."""
    mounts = CgroupMounts(CgroupLayout.HYBRID, v1={"cpu": tmp_path / "cpu"}, v2=_v2(tmp_path, "memory"))
    assert config.limit_settings(2, 4096, mounts) == [
        ("lxc.cgroup.cpu.cfs_period_us", "100000"),
        ("lxc.cgroup.cpu.cfs_quota_us", "200000"),
        ("lxc.cgroup2.memory.max", "4096"),
    ]


def test_limits_tiny_cpu_share_has_a_floor(tmp_path: Path) -> None:
    mounts = CgroupMounts(CgroupLayout.V1, v1={"cpu": tmp_path})
    assert ("lxc.cgroup.cpu.cfs_quota_us", "1000") in config.limit_settings(0.001, None, mounts)


def test_limits_without_controller_are_unsupported(tmp_path: Path) -> None:
    mounts = CgroupMounts(CgroupLayout.V2, v2=_v2(tmp_path, "pids"))
    with pytest.raises(Unsupported, match="cpu"):
        config.limit_settings(1, None, mounts)
    with pytest.raises(Unsupported, match="memory"):
        config.limit_settings(None, 1, mounts)


def test_no_limits_need_no_cgroups() -> None:
    assert config.limit_settings(None, None, None) == []


# -- config rendering --------------------------------------------------------------------------


def test_render_config_lines_and_comments() -> None:
    text = config.render_config(["hello", ("lxc.uts.name", "web"), "", ("lxc.net.0.type", "empty")])
    assert text == "# hello\nlxc.uts.name = web\n\nlxc.net.0.type = empty\n"


def test_config_entries_of_a_container(tmp_path: Path) -> None:
    from cman.backends.lxc.idmap import IdMap
    from cman.models import ContainerSpec

    paths = tools.Paths(str(tmp_path), "web")
    image = {"architecture": "x86_64", "lxc_config": [["lxc.signal.halt", "SIGUSR1"], ["lxc.hook.start", "/x"]]}
    spec = ContainerSpec(image="img", name="web", auto_remove=True)
    text = config.render_config(config.config_entries(paths, spec, image, [("lxc.cgroup.memory.limit_in_bytes", "5")],
                                                      idmap=IdMap(100000, 200000), apparmor=False))
    assert f"lxc.rootfs.path = dir:{tmp_path}/web/rootfs" in text
    assert "lxc.uts.name = web" in text
    assert "lxc.net.0.type = empty" in text
    assert "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 200000 65536" in text
    assert "lxc.apparmor" not in text, "no profile key on a host without AppArmor"
    assert f"lxc.console.logfile = {tmp_path}/web/console.log" in text
    assert "lxc.arch = x86_64" in text
    assert "lxc.cgroup.memory.limit_in_bytes = 5" in text
    assert "lxc.signal.halt = SIGUSR1" in text
    assert "lxc.hook.start" not in text, "only allow-listed keys come from an image"
    assert "lxc.ephemeral = 1" in text


# -- files ----------------------------------------------------------------------------------------


def test_tail_reader_restarts_after_truncation(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    path.write_bytes(b"boot one\n")
    reader = _lxc_fs.TailReader(path)
    assert reader.read() == b"boot one\n"
    path.write_bytes(b"two\n")
    assert reader.read() == b"two\n"


def test_lock_is_exclusive_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    lock = tmp_path / ".cman.lock"
    with _lxc_fs.locked(lock):
        probe = subprocess.run(
            [sys.executable, "-c", "import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n fcntl.flock(fd, fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')\n"
             "except BlockingIOError: print('busy')", str(lock)],
            capture_output=True, text=True, check=True,
        )
        assert probe.stdout.strip() == "busy"
    from cman.errors import EngineTimeout

    # flock is per open file: a second open in the same process waits too
    with _lxc_fs.locked(lock), pytest.raises(EngineTimeout), _lxc_fs.locked(lock, timeout=0.1):
        pass


def test_ago_text() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    assert ago(now - timedelta(seconds=5)) in ("5 seconds", "6 seconds")
    assert ago(now - timedelta(minutes=3, seconds=2)) == "3 minutes"
    assert ago(now - timedelta(hours=1)) == "1 hour"
    assert ago(None) == ""


def test_first_error_of_this_start_is_the_cause(tmp_path: Path) -> None:
    paths = tools.Paths(str(tmp_path), "web")
    paths.dir.mkdir()
    old = "lxc-start web 1 ERROR    start - a.c:1 - an error of an earlier start\n"
    new = (
        'lxc-start web 2 ERROR    start - ../src/lxc/start.c:start:2197 - No such file or directory'
        ' - Failed to exec "/sbin/init"\n'
        "lxc-start web 2 ERROR    start - ../src/lxc/start.c:__lxc_start:2107 - Failed to spawn container\n"
    )
    paths.lxclog.write_text(old + new)
    assert tools.first_error(paths, len(old)) == (
        'No such file or directory - Failed to exec "/sbin/init"'
    )
    assert tools.first_error(paths, len(old + new)) == ""
    assert tools.first_error(tools.Paths(str(tmp_path), "gone"), 0) == ""


def test_short_image_names_map_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from cman import images
    from cman.errors import InvalidValue

    monkeypatch.delenv("CMAN_LXC_IMAGE_MAP", raising=False)
    assert images.short_names("lxc")["debian:12"] == "download:debian/bookworm"
    assert images.short_names("lxc")["busybox"] == "template:busybox"
    monkeypatch.setenv("CMAN_LXC_IMAGE_MAP", '{"debian:12": "download:debian/trixie", "mine": "x/y"}')
    assert images.short_names("lxc")["debian:12"] == "download:debian/trixie"
    assert images.short_names("lxc")["mine"] == "x/y"
    monkeypatch.setenv("CMAN_LXC_IMAGE_MAP", "not json")
    with pytest.raises(InvalidValue, match="CMAN_LXC_IMAGE_MAP"):
        images.short_names("lxc")
