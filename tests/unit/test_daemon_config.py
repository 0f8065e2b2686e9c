"""`cman engine configure docker` without touching the real daemon: validation, merge,
atomic writes and diffs on a copy of daemon.json in a tmp dir, and the dockerd process
reading against a fake /proc."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from cman import dockerd as dc
from cman.errors import InvalidValue, UsageError

from ..conftest import assert_clean_error, cli, require_root, unavailable

# -- settings -------------------------------------------------------------------------------------


def test_settings_values_only_what_is_set() -> None:
    s = dc.DaemonSettings(dns=("192.0.2.53",), icc=False, registry_mirrors=("http://127.0.0.1:5999",))
    assert s.values() == {"dns": ["192.0.2.53"], "icc": False, "registry-mirrors": ["http://127.0.0.1:5999/"]}
    assert dc.DaemonSettings().values() == {}
    assert dc.DaemonSettings(bridge="none").values() == {"bridge": "none"}
    assert dc.DaemonSettings(bip="172.30.0.1/16").bip == "172.30.0.1/16"


@pytest.mark.parametrize(
    ("kwargs", "field", "why"),
    [
        ({"bridge": "x" * 16}, "--bridge", "15"),
        ({"bridge": "a/b"}, "--bridge", "'/'"),
        ({"bip": "172.30.0.0/16"}, "--bip", "network or broadcast"),
        ({"bip": "172.30.255.255/16"}, "--bip", "network or broadcast"),
        ({"bip": "172.30.0.1"}, "--bip", "ADDRESS/PREFIX"),
        ({"bip": "fd00::1/64"}, "--bip", "IPv4"),
        ({"bip": "junk"}, "--bip", "ADDRESS/PREFIX"),
        ({"bip": "172.30.0.1/31"}, "--bip", "between /8 and /30"),
        ({"bip": "127.0.0.2/8"}, "--bip", "usable"),
        ({"bridge": "br0", "bip": "172.30.0.1/16"}, "--bip", "together"),
        ({"dns": ("resolver.example",)}, "--dns", "IP address"),
        ({"dns": ("192.0.2.1", "192.0.2.1")}, "--dns", "twice"),
        ({"registry_mirrors": ("ftp://m.example",)}, "--registry-mirror", "http://"),
        ({"registry_mirrors": ("m.example:5000",)}, "--registry-mirror", "http://"),
        ({"registry_mirrors": ("http://u:p@m.example",)}, "--registry-mirror", "credentials"),
        ({"registry_mirrors": ("http://m.example/v2",)}, "--registry-mirror", "no path"),
        ({"registry_mirrors": ("http://m.example:99999",)}, "--registry-mirror", "out of range"),
        ({"registry_mirrors": ("http://m.example", "http://m.example/")}, "--registry-mirror", "twice"),
        ({"unset": ("log-level",)}, "--unset", "manages only"),
        ({"unset": ("dns",), "dns": ("192.0.2.1",)}, "--unset", "also being set"),
    ],
)
def test_invalid_settings_name_the_option(kwargs: dict[str, object], field: str, why: str) -> None:
    with pytest.raises(InvalidValue) as info:
        dc.DaemonSettings(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(f"invalid {field} "), str(info.value)
    assert why in str(info.value)


# -- merge, render, write ---------------------------------------------------------------------------


def test_merge_keeps_unmanaged_keys_and_order() -> None:
    current = {"log-level": "warn", "dns": ["192.0.2.1"], "storage-driver": "overlay2"}
    merged = dc.merge(current, dc.DaemonSettings(dns=("192.0.2.9",), icc=False))
    assert list(merged) == ["log-level", "dns", "storage-driver", "icc"]
    assert merged["dns"] == ["192.0.2.9"] and merged["storage-driver"] == "overlay2"
    assert dc.merge(current, dc.DaemonSettings(unset=("dns",))) == {"log-level": "warn", "storage-driver": "overlay2"}


def test_merge_refuses_bridge_next_to_an_existing_bip() -> None:
    with pytest.raises(InvalidValue, match="--unset bip"):
        dc.merge({"bip": "172.30.0.1/16"}, dc.DaemonSettings(bridge="br0"))
    with pytest.raises(InvalidValue, match="--unset bridge"):
        dc.merge({"bridge": "br0"}, dc.DaemonSettings(bip="172.30.0.1/16"))
    assert dc.merge({"bip": "172.30.0.1/16"}, dc.DaemonSettings(bridge="br0", unset=("bip",))) == {"bridge": "br0"}


def test_plan_on_a_missing_file_and_no_change(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    assert not dc.plan(path, dc.DaemonSettings()).changed
    p = dc.plan(path, dc.DaemonSettings(icc=False))
    assert p.changed and p.diff.startswith("--- /dev/null")
    path.write_text('{"icc": false}')
    same = dc.plan(path, dc.DaemonSettings(icc=False))
    assert not same.changed and same.diff == "", "same values in another layout: left alone"


def test_unreadable_json_is_an_error_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        dc.plan(path, dc.DaemonSettings(icc=False))
    path.write_text("[1, 2]")
    with pytest.raises(UsageError, match="JSON object"):
        dc.plan(path, dc.DaemonSettings(icc=False))


def test_write_config_keeps_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "daemon.json"
    dc.write_config(path, "{}\n")
    assert path.read_text() == "{}\n" and (path.stat().st_mode & 0o777) == 0o644
    path.chmod(0o600)
    dc.write_config(path, '{"icc": true}\n')
    assert json.loads(path.read_text()) == {"icc": True}
    assert (path.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["daemon.json"]
    dc.restore(path, None)
    assert not path.exists()


# -- the CLI on a copy ---------------------------------------------------------------------------------


def test_cli_on_a_copy_prints_a_diff_and_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"log-level": "warn", "storage-driver": "overlay2"}))
    args = ("engine", "configure", "docker", "--config", str(path))
    proc = cli(*args, "--dns", "192.0.2.53", "--dns", "192.0.2.54", "--no-icc", "--registry-mirror",
               "http://127.0.0.1:5999", "--bip", "10.203.250.1/24")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"--- {path} (before)\n+++ {path}\n"), proc.stdout
    assert '+  "icc": false' in proc.stdout and '+    "192.0.2.54"' in proc.stdout
    assert "not applied" in proc.stdout
    assert json.loads(path.read_text()) == {
        "log-level": "warn", "storage-driver": "overlay2", "bip": "10.203.250.1/24",
        "dns": ["192.0.2.53", "192.0.2.54"], "icc": False, "registry-mirrors": ["http://127.0.0.1:5999/"],
    }
    before = path.stat()
    again = cli(*args, "--no-icc", "--dns", "192.0.2.53", "--dns", "192.0.2.54")
    assert again.returncode == 0 and again.stdout.strip() == f"{path}: no change", again.stdout
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_ino == before.st_ino
    unset = cli(*args, "--unset", "bip", "--unset", "registry-mirrors", "--icc")
    assert unset.returncode == 0, unset.stderr
    assert json.loads(path.read_text()) == {"log-level": "warn", "storage-driver": "overlay2",
                                            "dns": ["192.0.2.53", "192.0.2.54"], "icc": True}


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--bip", "10.203.250.0/24"), "--bip"),
        (("--dns", "not-an-ip"), "--dns"),
        (("--registry-mirror", "docker.example"), "--registry-mirror"),
        (("--bridge", "br0", "--bip", "10.203.250.1/24"), "together"),
        (("--unset", "storage-driver"), "--unset"),
    ],
)
def test_cli_invalid_values_leave_the_file_untouched(tmp_path: Path, extra: tuple[str, ...], needle: str) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"log-level": "warn"}')
    proc = cli("engine", "configure", "docker", "--config", str(path), *extra)
    assert_clean_error(proc, 2, needle)
    assert path.read_text() == '{"log-level": "warn"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.json"]


def test_cli_bip_overlapping_a_host_route_is_refused(tmp_path: Path) -> None:
    from cman.network import read_host

    usable = [r for r in read_host().routes if r.dev != "docker0" and 8 <= r.net.prefixlen <= 30
              and not r.net.is_loopback]
    if not usable:  # the engines' own bridges give CI a route; elsewhere this is a missing engine
        unavailable("no host route to collide with (no engine bridge is up)")
    route = usable[0]
    bip = f"{next(route.net.hosts())}/{route.net.prefixlen}"
    path = tmp_path / "daemon.json"
    proc = cli("engine", "configure", "docker", "--config", str(path), "--bip", bip)
    assert_clean_error(proc, 2, "--bip", "overlaps", str(route.net))
    assert not path.exists()


def test_cli_apply_refuses_a_file_the_daemon_does_not_read(tmp_path: Path) -> None:
    require_root("restarting dockerd")
    daemon = dc.find_dockerd()
    if daemon is None:
        unavailable("no local dockerd process (or systemd manages it)")
    path = tmp_path / "daemon.json"
    proc = cli("engine", "configure", "docker", "--config", str(path), "--icc", "--apply")
    assert_clean_error(proc, 2, f"reads {daemon.config_file()}")
    assert not path.exists(), "validation happens before anything is written"
    assert dc.find_dockerd() is not None and dc.find_dockerd().pid == daemon.pid  # type: ignore[union-attr]


# -- the daemon process, from a fake /proc ------------------------------------------------------------------


def _fake_proc(root: Path, pid: int, argv: list[str], *, comm: str = "dockerd", env: dict[str, str] | None = None,
               state: str = "S", log: Path | None = None) -> None:
    (root / "stat").write_text("cpu  1 2 3\nbtime 1700000000\n")
    base = root / str(pid)
    (base / "fd").mkdir(parents=True)
    (base / "comm").write_text(comm + "\n")
    (base / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (base / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in (env or {}).items()) + b"\0")
    fields = [state] + ["0"] * 18 + ["250"] + ["0"] * 20  # field 22 (starttime) = 250 ticks
    (base / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
    os.symlink("/", base / "cwd")
    if log is not None:
        os.symlink(log, base / "fd" / "2")


def test_a_daemon_start_time_is_as_precise_as_proc_uptime(tmp_path: Path) -> None:
    """btime is whole seconds: a daemon started 0.3 s after a write could read as older than it
    (CI saw `--apply` restart dockerd for "no change"). /proc/uptime has hundredths."""
    proc = tmp_path / "proc"
    proc.mkdir()
    _fake_proc(proc, 4242, ["dockerd"])
    (proc / "uptime").write_text("1000.50 1900.00\n")
    before = time.time()
    found = dc.read_process(4242, proc)
    assert found is not None
    ticks = os.sysconf("SC_CLK_TCK")
    assert before - 1000.5 + 250 / ticks - 0.01 <= found.started <= time.time() - 1000.5 + 250 / ticks + 0.01


def test_read_process_and_find_dockerd(tmp_path: Path) -> None:
    log = tmp_path / "dockerd.log"
    log.write_text("")
    proc = tmp_path / "proc"
    proc.mkdir()
    _fake_proc(proc, 4242, ["dockerd", "--config-file=/etc/alt.json", "--dns", "192.0.2.1"],
               env={"HTTP_PROXY": "http://127.0.0.1:9"}, log=log)
    _fake_proc(proc, 7, ["sleep", "1"], comm="sleep")
    found = dc.find_dockerd(proc, pidfile=tmp_path / "none.pid")
    assert found is not None and found.pid == 4242
    assert found.argv == ("dockerd", "--config-file=/etc/alt.json", "--dns", "192.0.2.1")
    assert found.env == {"HTTP_PROXY": "http://127.0.0.1:9"}
    assert found.log == log and found.cwd == "/"
    assert found.started == 1700000000 + 250 / os.sysconf("SC_CLK_TCK")
    assert found.config_file() == Path("/etc/alt.json")
    assert found.flag_conflicts(["dns", "icc", "registry-mirrors"]) == ["dns"]


def test_find_dockerd_prefers_the_pidfile_and_skips_zombies(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    _fake_proc(proc, 10, ["dockerd"], state="Z")
    assert dc.find_dockerd(proc, pidfile=tmp_path / "none.pid") is None
    _fake_proc(proc, 11, ["dockerd", "-b", "br0"])
    _fake_proc(proc, 12, ["dockerd", "--bip=172.30.0.1/16"])
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text("12\n")
    found = dc.find_dockerd(proc, pidfile=pidfile)
    assert found is not None and found.pid == 12 and found.config_file() == dc.DEFAULT_PATH
    assert found.flag_conflicts(["bip", "bridge"]) == ["bip"]
    with pytest.raises(Exception, match="several dockerd"):
        dc.find_dockerd(proc, pidfile=tmp_path / "none.pid")


def test_needs_restart_compares_file_time_with_daemon_start(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text("{}")
    daemon = dc.DaemonProcess(1, ("dockerd",), {}, "/", None, started=path.stat().st_mtime - 5)
    assert dc.needs_restart(path, daemon)
    assert not dc.needs_restart(path, dc.DaemonProcess(1, ("dockerd",), {}, "/", None, path.stat().st_mtime + 5))
    assert not dc.needs_restart(path, None)
    assert not dc.needs_restart(tmp_path / "missing.json", daemon)


def test_a_daemon_whose_folder_was_deleted_restarts_from_the_root(tmp_path: Path) -> None:
    """dockerd started from a checkout that is gone since (its cwd reads "/old (deleted)"):
    the new one starts from "/" instead of failing as if dockerd were not installed."""
    proc = tmp_path / "proc"
    proc.mkdir()
    _fake_proc(proc, 4242, ["dockerd"])
    cwd = proc / "4242" / "cwd"
    cwd.unlink(missing_ok=True)
    os.symlink(str(tmp_path / "gone") + " (deleted)", cwd)
    found = dc.find_dockerd(proc, pidfile=tmp_path / "none.pid")
    assert found is not None and found.cwd == "/"
