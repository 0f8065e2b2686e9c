"""Least privilege on raw LXC, against real LXC: secrets never on an argv, unprivileged
containers by default (an id map, a shifted rootfs cached per image, files cman writes
owned by the container's root), and privileged containers only when asked.

Runs in a private LXC path and image store (:mod:`.lxc_lab`); everything is removed in
teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cman.backends.lxc import rootfs
from cman.backends.lxc.idmap import host_has_apparmor, host_idmap
from cman.backends.lxc.tools import Paths
from cman.errors import CmanError

from .lxc_lab import Lxc, private_lxc, wait_for

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def lx() -> Iterator[Lxc]:
    with private_lxc() as lab:
        yield lab


@pytest.fixture
def made(lx: Lxc) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(CmanError):
            lx.backend.remove(name, force=True)


def _processes() -> Iterator[tuple[int, bytes, bytes]]:
    """(PID, cmdline, environ) of every process on the host that can still be read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        yield int(entry), cmdline, environ


def _holders(variable: str, value: str, argv: list[str]) -> list[int]:
    """PIDs of processes running exactly ``argv`` whose environment holds ``variable=value``."""
    want_env, want_argv = f"{variable}={value}".encode(), b"\0".join(a.encode() for a in argv) + b"\0"
    return [pid for pid, cmdline, environ in _processes()
            if cmdline == want_argv and want_env in environ.split(b"\0")]


def _on_any_cmdline(value: str, typed_by: int | None = None) -> list[tuple[int, bytes]]:
    """Processes with ``value`` on their argv, but the cman CLI it was typed into (``typed_by``):
    ``-e K=V`` on a command line is the user's own argv, as with ``docker run -e``."""
    return [(pid, cmdline) for pid, cmdline, _ in _processes() if value.encode() in cmdline and pid != typed_by]


# -- secrets ---------------------------------------------------------------------------------------


def test_env_values_never_reach_a_cmdline(lx: Lxc, made: list[str]) -> None:
    """A detached job, a foreground run and an exec: while each runs, no /proc/*/cmdline on
    the host holds the value (any local user can read those), and the command still sees it."""
    secret = f"cmantest-secret-{secrets.token_hex(16)}"
    name = lx.name("secret")
    made.append(name)
    proc = lx.cli("run", "-d", "--name", name, "-e", f"CMANTEST_SECRET={secret}", lx.image, "sleep", "300")
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: _holders("CMANTEST_SECRET", secret, ["sleep", "300"]), timeout=30)
    assert _on_any_cmdline(secret) == [], "the detached job's value is on an argv"

    exec_secret = f"cmantest-exec-{secrets.token_hex(16)}"
    running = lx.popen("exec", "-e", f"CMANTEST_EXEC={exec_secret}", name, "sleep", "7")
    try:
        wait_for(lambda: _holders("CMANTEST_EXEC", exec_secret, ["sleep", "7"]), timeout=30)
        assert _on_any_cmdline(exec_secret, running.pid) == [], "exec's value is on an argv"
    finally:
        running.kill()
        running.wait(timeout=30)

    fg_secret = f"cmantest-fg-{secrets.token_hex(16)}"
    foreground = lx.popen("run", "--rm", "-e", f"CMANTEST_FG={fg_secret}", lx.image, "sleep", "6")
    try:
        wait_for(lambda: _holders("CMANTEST_FG", fg_secret, ["sleep", "6"]), timeout=30)
        assert _on_any_cmdline(fg_secret, foreground.pid) == [], "the foreground job's value is on an argv"
        assert foreground.wait(timeout=60) == 0
    finally:
        if foreground.poll() is None:
            foreground.kill()


def test_loader_variables_reach_the_command_not_lxc_attach(lx: Lxc) -> None:
    proc = lx.cli("run", "--rm", "-e", "LD_LIBRARY_PATH=/opt/cman test/lib", "-e", "PLAIN=1", lx.image,
                  "sh", "-c", 'echo "[$LD_LIBRARY_PATH][$PLAIN][${CMAN_HOSTENV_LD_LIBRARY_PATH-none}]"')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[/opt/cman test/lib][1][none]"


# -- unprivileged by default -------------------------------------------------------------------------


def _cache(lx: Lxc, image: str) -> Path:
    info = json.loads(lx.cli("image", "inspect", image, "--json").stdout)
    idmap = host_idmap()
    return lx.images / str(info["id"]).removeprefix("sha256:") / f"rootfs.{idmap.key}"


def test_containers_are_unprivileged_by_default(lx: Lxc, made: list[str]) -> None:
    idmap = host_idmap()
    name = lx.name("userns")
    made.append(name)
    proc = lx.cli("run", "-d", "--name", name, "--dns", "192.0.2.53", lx.image, "sleep", "300")
    assert proc.returncode == 0, proc.stderr
    assert "privileged" not in proc.stderr
    pid = lx.backend.init_pid(name)
    assert pid
    assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", str(idmap.uid), "65536"]
    assert Path(f"/proc/{pid}/gid_map").read_text().split() == ["0", str(idmap.gid), "65536"]
    config = (lx.lxcpath / name / "config").read_text()
    assert f"lxc.idmap = u 0 {idmap.uid} 65536" in config and "userns.conf" in config
    assert "unconfined" not in config
    assert ("lxc.apparmor.profile = generated" in config) == host_has_apparmor()
    inside = lx.cli("exec", name, "sh", "-c", "id -u; echo 'search cman.test' >> /etc/resolv.conf && echo wrote")
    assert inside.stdout.split() == ["0", "wrote"], inside.stderr
    layers = rootfs.layers(Paths(str(lx.lxcpath), name))
    assert layers.lower == _cache(lx, lx.image), "an overlay over the image's shifted rootfs"
    assert (layers.upper.stat().st_uid, layers.upper.stat().st_gid) == idmap.root
    for rel in ("bin/busybox", "etc/resolv.conf", "var/log/cman/job.rc"):
        st = rootfs.stat_file(layers, rel)
        assert st is not None and (st.st_uid, st.st_gid) == idmap.root, rel
    meta = json.loads(lx.cli("inspect", name, "--json").stdout)[0]["extra"]
    assert meta["privileged"] is False and meta["idmap"] == [idmap.uid, idmap.gid, 65536]
    assert oct((lx.lxcpath / name / "cman.json").stat().st_mode & 0o777) == "0o600", "env may hold secrets"


def test_a_job_in_an_unprivileged_container_records_its_code(lx: Lxc, made: list[str]) -> None:
    name = lx.name("code")
    made.append(name)
    assert lx.cli("run", "-d", "--name", name, lx.image, "sh", "-c", "echo out; exit 7").returncode == 0
    assert lx.backend.wait(name) == 7
    assert [c.data for c in lx.backend.logs(name) if c.stream == "stdout"] == [b"out\n"]


def test_the_shifted_rootfs_is_made_once_per_image_and_goes_with_it(lx: Lxc, made: list[str]) -> None:
    from ..conftest import ROOTFS

    image = lx.name("img")
    assert lx.cli("image", "import", str(ROOTFS), image).returncode == 0
    try:
        first, second = lx.name("first"), lx.name("second")
        made += [first, second]
        assert lx.cli("create", "--name", first, image).returncode == 0
        cache = _cache(lx, image)
        assert cache.is_dir()
        before = cache.stat()
        assert lx.cli("create", "--name", second, image).returncode == 0
        after = cache.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "made once, reused"
        assert not list(cache.parent.glob(".rootfs.*")), "no work folder left"
        assert lx.cli("rm", first, second).returncode == 0
        assert lx.cli("image", "rm", image).returncode == 0
        assert not cache.exists() and not cache.parent.exists(), "image rm removes the cache"
    finally:
        lx.cli("image", "rm", "-f", image)


def test_privileged_only_when_asked_and_said(lx: Lxc, made: list[str]) -> None:
    name = lx.name("priv")
    made.append(name)
    proc = lx.cli("run", "-d", "--privileged", "--name", name, lx.image, "sleep", "300")
    assert proc.returncode == 0, proc.stderr
    assert "privileged" in proc.stderr, "cman says so on stderr"
    pid = lx.backend.init_pid(name)
    assert pid
    assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", "0", "4294967295"]
    config = (lx.lxcpath / name / "config").read_text()
    assert "lxc.idmap" not in config and "userns.conf" not in config
    assert ("lxc.apparmor.profile = unconfined" in config) == host_has_apparmor()
    busybox = rootfs.stat_file(rootfs.layers(Paths(str(lx.lxcpath), name)), "bin/busybox")
    assert busybox is not None and busybox.st_uid == 0, "the image's rootfs, unshifted"
    assert json.loads(lx.cli("inspect", name, "--json").stdout)[0]["extra"]["privileged"] is True


def test_raw_lxc_sees_the_same_container(lx: Lxc, made: list[str]) -> None:
    """An unprivileged container of cman is an ordinary LXC container: lxc-attach by hand works."""
    name = lx.name("byhand")
    made.append(name)
    assert lx.cli("run", "-d", "--name", name, lx.image, "sleep", "300").returncode == 0
    out = subprocess.run(["lxc-attach", "-P", str(lx.lxcpath), "-n", name, "--", "cat", "/proc/self/uid_map"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.split()[:2] == ["0", str(host_idmap().uid)]
