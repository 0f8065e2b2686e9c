"""The raw LXC backend against real LXC, beyond the shared conformance suite.

Everything here runs in a private LXC path and a private image store (:mod:`.lxc_lab`),
so it can neither see nor disturb other containers. Every resource is named
``cmantest-<random>`` and removed in teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from cman.backends.lxc import rootfs
from cman.backends.lxc.tools import Paths
from cman.errors import CmanError
from cman.models import State, StdIO

from ..conftest import ROOTFS, assert_clean_error
from .lxc_lab import Lxc, private_lxc, wait_for

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def lx() -> Iterator[Lxc]:
    with private_lxc() as lab:
        yield lab


@pytest.fixture
def made(lx: Lxc) -> Iterator[list[str]]:
    """Names a test makes; removed after it even when it fails."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(CmanError):
            lx.backend.remove(name, force=True)


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_creates_and_removes_do_not_corrupt_each_other(lx: Lxc, made: list[str]) -> None:
    # 8 different names created at once
    names = [lx.name(f"c{i}") for i in range(8)]
    made.extend(names)
    procs = [lx.popen("create", "--name", n, lx.image, "true") for n in names]
    results = [(p.wait(timeout=180), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    listed = lx.ls()
    assert set(names) <= set(listed), listed
    for n in names:
        d = lx.lxcpath / n
        busybox = rootfs.stat_file(rootfs.layers(Paths(str(lx.lxcpath), n)), "bin/busybox")
        assert busybox is not None and stat.S_ISREG(busybox.st_mode)
        assert json.loads((d / "cman.json").read_text())["managed"] is True
        assert f"lxc.uts.name = {n}" in (d / "config").read_text()

    # the same name from 5 processes at once: exactly one wins, the others get NameInUse
    dup = lx.name("dup")
    made.append(dup)
    procs = [lx.popen("create", "--name", dup, "--label", f"writer={i}", lx.image) for i in range(5)]
    results = [(p.wait(timeout=180), p.stderr.read() if p.stderr else "") for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 4, 4, 4, 4], results
    assert all("already in use" in err for rc, err in results if rc == 4)
    winner = next(i for i, (rc, _) in enumerate(results) if rc == 0)
    assert json.loads((lx.lxcpath / dup / "cman.json").read_text())["labels"] == {"writer": str(winner)}
    assert lx.cli("start", dup).returncode == 0
    assert lx.cli("exec", dup, "true").returncode == 0

    # removes of the first 8 interleaved with 4 new creates
    fresh = [lx.name(f"n{i}") for i in range(4)]
    made.extend(fresh)
    procs = [lx.popen("rm", "-f", n) for n in names] + [lx.popen("create", "--name", n, lx.image) for n in fresh]
    results = [(p.wait(timeout=180), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    listed = lx.ls()
    assert not set(names) & set(listed)
    assert set(fresh) <= set(listed)
    assert not any((lx.lxcpath / n).exists() for n in names), "no leftover directories"

    # the same container removed by 4 processes at once: one succeeds, the others say it is gone
    procs = [lx.popen("rm", "-f", dup) for _ in range(4)]
    results = [(p.wait(timeout=180), p.stderr.read() if p.stderr else "") for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 3, 3, 3], results
    assert dup not in lx.ls() and not (lx.lxcpath / dup).exists()


def test_create_waits_for_the_lxcpath_lock(lx: Lxc, made: list[str]) -> None:
    name = lx.name("lock")
    made.append(name)
    fd = os.open(lx.lxcpath / ".cman.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = lx.popen("create", "--name", name, lx.image)
        time.sleep(1.5)
        assert proc.poll() is None, "create must wait for the lock"
        assert not (lx.lxcpath / name).exists()
    finally:
        os.close(fd)  # releases the lock
    assert proc.wait(timeout=60) == 0
    assert name in lx.ls()


def test_concurrent_imports_under_one_name(lx: Lxc) -> None:
    name = lx.name("img")
    procs = [lx.popen("image", "import", str(ROOTFS), name) for _ in range(4)]
    results = [(p.wait(timeout=180), p.stderr.read() if p.stderr else "") for p in procs]
    try:
        assert all(rc == 0 for rc, _ in results), results
        images = json.loads(lx.cli("images", "--json").stdout)
        assert sum(name in img["tags"] for img in images) == 1, "exactly one image holds the name"
        pruned = json.loads(lx.cli("image", "prune", "--json").stdout)
        assert len(pruned["removed"]) >= 3
        assert lx.cli("image", "inspect", name).returncode == 0
        assert lx.cli("image", "inspect", lx.image).returncode == 0, "prune keeps named images"
    finally:
        lx.cli("image", "rm", "-f", name)


# -- run semantics -----------------------------------------------------------------------------


def test_detached_command_output_order_exit_code_and_stop(lx: Lxc, made: list[str]) -> None:
    name = lx.name("job")
    made.append(name)
    proc = lx.cli("run", "-d", "--name", name, lx.image, "sh", "-c",
                  "echo one; echo two >&2; echo three; sleep 1; exit 7")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == name
    assert lx.backend.wait(name) == 7
    info = lx.backend.inspect(name)
    assert info.state == State.STOPPED, "the container lives as long as its command"
    assert info.exit_code == 7
    chunks = [c for c in lx.backend.logs(name) if c.data.strip()]
    # Two pipes: order within a stream is kept; across streams it cannot be (as with docker logs).
    assert b"".join(c.data for c in chunks if c.stream == "stdout") == b"one\nthree\n"
    assert b"".join(c.data for c in chunks if c.stream == "stderr") == b"two\n"
    assert "Exited (7)" in lx.cli("ps", "-a").stdout


def test_detached_command_cpu_is_accounted_to_the_container(lx: Lxc, made: list[str]) -> None:
    name = lx.name("cpu")
    made.append(name)
    assert lx.cli("run", "-d", "--name", name, lx.image, "sh", "-c", "while :; do :; done").returncode == 0
    pid = lx.backend.init_pid(name)
    assert pid
    cg = {c: p for _, cs, p in (ln.split(":", 2) for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
          for c in cs.split(",")}
    if "cpuacct" in cg and Path("/sys/fs/cgroup/cpuacct").is_dir():
        base = Path("/sys/fs/cgroup/cpuacct") / cg["cpuacct"].lstrip("/")
        procs = base / "cgroup.procs"
        usage = lambda: int((base / "cpuacct.usage").read_text()) / 1e9  # noqa: E731
    else:
        base = Path("/sys/fs/cgroup") / cg[""].lstrip("/")
        procs = base / "cgroup.procs"
        usage = lambda: int(dict(ln.split() for ln in (base / "cpu.stat").read_text().splitlines())["usage_usec"]) / 1e6  # noqa: E731
    busy = [p for p in procs.read_text().split() if b"while" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert busy, "the command runs in the container's cgroup"
    before = usage()
    time.sleep(1.0)
    assert usage() - before > 0.3, "its CPU time is counted there"


def test_no_command_means_a_plain_system_container(lx: Lxc, made: list[str]) -> None:
    detached, foreground = lx.name("sys"), lx.name("fg")
    made += [detached, foreground]
    assert lx.cli("run", "-d", "--name", detached, lx.image).returncode == 0
    assert lx.state(detached) == "running"
    proc = lx.cli("run", "--name", foreground, lx.image)
    assert proc.returncode == 0, proc.stderr
    assert lx.state(foreground) == "running", "without -i and CMD: boot and return"
    piped = lx.cli("run", "--rm", "-i", lx.image, input="echo from-default-shell\n")
    assert piped.stdout.strip() == "from-default-shell", "with -i and no CMD: the image's /bin/sh"


def test_restart_runs_the_command_again(lx: Lxc, made: list[str]) -> None:
    name = lx.name("again")
    made.append(name)
    assert lx.cli("run", "-d", "--name", name, lx.image, "sh", "-c", "echo started; sleep 300").returncode == 0
    wait_for(lambda: b"started" in b"".join(c.data for c in lx.backend.logs(name)))
    assert lx.cli("restart", "-t", "1", name).returncode == 0
    wait_for(lambda: b"".join(c.data for c in lx.backend.logs(name)).count(b"started") == 2)
    assert lx.state(name) == "running"


def test_sigterm_to_a_foreground_run_stops_the_container(lx: Lxc, made: list[str]) -> None:
    name = lx.name("term")
    made.append(name)
    proc = lx.popen("run", "--name", name, lx.image, "sleep", "120")
    try:
        wait_for(lambda: lx.state(name) == "running", timeout=30)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert lx.state(name) == "stopped", "no orphaned command left running"


def test_stop_honours_the_grace_time(lx: Lxc, made: list[str]) -> None:
    name = lx.name("grace")
    made.append(name)
    assert lx.cli("run", "-d", "--name", name, lx.image, "sleep", "300").returncode == 0
    started = time.monotonic()
    assert lx.cli("stop", "-t", "0", name).returncode == 0
    assert time.monotonic() - started < 5
    assert lx.ls()[name][0] == "STOPPED"


def test_auto_remove_detached(lx: Lxc, made: list[str]) -> None:
    name = lx.name("eph")
    made.append(name)
    assert lx.cli("run", "-d", "--rm", "--name", name, lx.image, "sh", "-c", "sleep 1; exit 2").returncode == 0
    assert "lxc.ephemeral = 1" in (lx.lxcpath / name / "config").read_text()
    wait_for(lambda: not (lx.lxcpath / name).exists(), timeout=30)
    assert name not in lx.ls()


def test_limits_use_the_hosts_cgroup_layout(lx: Lxc, made: list[str]) -> None:
    from cman.cgroups import find_mounts

    name = lx.name("limits")
    made.append(name)
    assert lx.cli("create", "--name", name, "--cpus", "0.5", "--memory", "64m", lx.image).returncode == 0
    config = (lx.lxcpath / name / "config").read_text()
    mounts = find_mounts()
    cpu_key = "lxc.cgroup.cpu.cfs_quota_us = 50000" if "cpu" in mounts.v1 else "lxc.cgroup2.cpu.max = 50000 100000"
    mem_key = "lxc.cgroup.memory.limit_in_bytes" if "memory" in mounts.v1 else "lxc.cgroup2.memory.max"
    assert cpu_key in config
    assert f"{mem_key} = {64 * 1024 * 1024}" in config


# -- terminals and streams -----------------------------------------------------------------------


def test_it_keeps_typed_ahead_input_and_follows_resizes(lx: Lxc) -> None:
    env = {**os.environ, **lx.env}
    env.pop("CMAN_BACKEND", None)
    child = pexpect.spawn(sys.executable, ["-m", "cman", "--backend", "lxc", "run", "-it", "--rm", lx.image, "sh"],
                          dimensions=(33, 101), timeout=30, encoding="utf-8", env=env)
    try:
        child.sendline('echo "TY""PED"; stty size')  # typed before the container has booted
        child.expect("TYPED")
        child.expect("33 101")
        child.setwinsize(40, 120)
        time.sleep(0.3)
        child.sendline("stty size")
        child.expect("40 120")
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3


def test_library_tty_with_in_memory_streams(lx: Lxc, made: list[str]) -> None:
    name = lx.name("libtty")
    made.append(name)
    assert lx.cli("run", "-d", "--name", name, lx.image, "sleep", "300").returncode == 0
    out, err = io.BytesIO(), io.BytesIO()
    code = lx.backend.exec(name, ["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo both-ttys; read x; echo got-$x; exit 4"],
                           StdIO(io.BytesIO(b"hello\n"), out, err, tty=True))
    assert code == 4
    assert b"both-ttys" in out.getvalue() and b"got-hello" in out.getvalue()
    result = lx.backend.exec_capture(name, ["sh", "-c", "cat; echo e >&2; [ -t 0 ] || echo no-tty"], stdin=b"abc")
    assert result == type(result)(0, b"abcno-tty\n", b"e\n")


# -- images, pull, unmanaged, errors -------------------------------------------------------------------


def test_pull_busybox_template_then_run(lx: Lxc) -> None:
    proc = lx.cli("pull", "template:busybox")
    try:
        assert proc.returncode == 0, proc.stderr
        assert "busybox template" in proc.stderr
        info = json.loads(lx.cli("image", "inspect", "template:busybox", "--json").stdout)
        assert info["extra"]["source"]["kind"] == "template"
        assert ["lxc.signal.halt", "SIGUSR1"] in info["extra"]["lxc_config"]
        run = lx.cli("run", "--rm", "template:busybox", "sh", "-c", "exit 6")
        assert run.returncode == 6, run.stderr
        assert not list(lx.images.glob(".tmp-*")), "the temporary container is gone"
    finally:
        lx.cli("image", "rm", "-f", "template:busybox")


def test_download_template_fails_fast_without_a_server(lx: Lxc) -> None:
    started = time.monotonic()
    proc = lx.cli("pull", "debian/bookworm/amd64", env={"CMAN_LXC_DOWNLOAD_SERVER": ""})
    assert time.monotonic() - started < 5
    assert_clean_error(proc, 3, "image server")


def test_unmanaged_containers_are_listed_and_removable(lx: Lxc) -> None:
    name = lx.name("raw")
    conf = lx.lxcpath.parent / "raw.conf"
    conf.write_text("lxc.net.0.type = empty\nlxc.apparmor.profile = unconfined\n")
    subprocess.run(["lxc-create", "-P", str(lx.lxcpath), "-n", name, "-t", "busybox", "-f", str(conf)],
                   capture_output=True, check=True, timeout=120)
    items = {i["name"]: i for i in json.loads(lx.cli("ps", "-a", "--json").stdout)}
    assert items[name]["managed"] is False
    assert items[name]["state"] == "stopped"
    assert lx.cli("rm", name).returncode == 0
    assert not (lx.lxcpath / name).exists()


def test_ps_runs_no_lxc_tool_whatever_the_count(lx: Lxc, made: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What keeps ``ps`` fast, asserted as behaviour rather than time: states and PIDs come from
    the directories and liblxc's monitor processes, with no tool call at all (``lxc-ls -f`` cost
    about 2.5 ms of CPU per container); test_listing_shortcuts.py checks them against lxc-info."""
    from cman._sys import proc as _proc

    for i in range(3):
        name = lx.name(f"ps{i}")
        made.append(name)
        assert lx.cli("run", "-d", "--name", name, lx.image, "sleep", "300").returncode == 0
    calls: list[tuple[str, ...]] = []
    real = _proc.run

    def counting(argv: list[str], **kw: object) -> _proc.Completed:
        calls.append(tuple(argv))
        return real(argv, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_proc, "run", counting)
    listed = {c.name for c in lx.backend.containers(all=True)}
    assert set(made) <= listed
    assert calls == [], calls


def test_missing_tools_say_how_to_install(lx: Lxc) -> None:
    proc = lx.cli("engine", "status", "--json", env={"PATH": "/nonexistent-bin"})
    assert proc.returncode == 5
    entry = json.loads(proc.stdout)[0]
    assert entry["installed"] is False and "apt-get install lxc" in entry["fix"]
    assert_clean_error(lx.cli("ps", "-a", env={"PATH": "/nonexistent-bin"}), 5, "apt-get install lxc")


def test_exec_in_stopped_container_is_a_conflict(lx: Lxc, made: list[str]) -> None:
    name = lx.name("stopped")
    made.append(name)
    assert lx.cli("create", "--name", name, lx.image).returncode == 0
    assert_clean_error(lx.cli("exec", name, "true"), 125, "not running")
    assert lx.state(name) == "created"
