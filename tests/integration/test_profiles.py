"""Profiles on the real engines, through the real CLI: the shipped `isolated` limits (flags over them),
a profile's no-ICC network made on demand, and `docker-host` nesting in each backend's own form.

Profiles of the test's own live in a temporary $XDG_CONFIG_HOME (the user's folder, which wins
over the shipped ones); every container and network is named with the run's prefix and removed
even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from cman.backends.base import Feature
from cman.errors import Unsupported

from ..conftest import NET_PREFIX, Engine, assert_clean_error, cli, lacks, require_root

pytestmark = pytest.mark.engine

MIB = 1024**2


def _limits(eng: Engine, name: str) -> tuple[float | None, int | None]:
    """(cpus, memory bytes) as `inspect --json` shows them on this engine."""
    proc = eng.cli("inspect", "--json", name)
    assert proc.returncode == 0, proc.stderr
    extra = json.loads(proc.stdout)[0]["extra"]
    if "host_config" in extra:  # Docker
        host = extra["host_config"]
        return (host["NanoCpus"] / 1e9 if host.get("NanoCpus") else None), host.get("Memory") or None
    if "limits" in extra:  # LXD: a CFS quota "Nms/100ms" and bytes
        limits = extra["limits"]
        quota = limits.get("limits.cpu.allowance")
        cpus = int(quota.split("ms/")[0]) / 100 if quota else None
        return cpus, int(limits["limits.memory"]) if limits.get("limits.memory") else None
    return extra.get("cpus"), extra.get("memory")  # LXC: cman.json


def test_isolated_applies_its_limits_and_flags_win(eng: Engine) -> None:
    """The shipped `isolated`: 1 CPU and 512 MiB; `--cpus` and `--network none` on the command
    line win over it (so no shared network is made here), the memory stays the profile's."""
    eng.backend.require(Feature.CPU_LIMIT)
    eng.backend.require(Feature.MEMORY_LIMIT)
    plain = eng.name_for("iso")
    proc = eng.cli("create", "--profile", "isolated", "--network", "none", "--name", plain, eng.image, "true")
    assert proc.returncode == 0, proc.stderr
    assert _limits(eng, plain) == (1.0, 512 * MIB)
    ran = eng.name_for("isoflag")
    proc = eng.cli("run", "-d", "--profile", "isolated", "--network", "none", "--cpus", "0.5", "-m", "256m",
                   "--name", ran, eng.image, "sleep", "60")
    assert proc.returncode == 0, proc.stderr
    assert _limits(eng, ran) == (0.5, 256 * MIB)


@pytest.fixture
def user_profiles(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    folder = tmp_path / "cman" / "profiles"
    folder.mkdir(parents=True)
    yield {"XDG_CONFIG_HOME": str(tmp_path)}, folder


def test_a_profiles_network_is_made_without_icc_on_demand(
    eng: Engine, user_profiles: tuple[dict[str, str], Path],
) -> None:
    """A user's `isolated` overrides the shipped one (`profile ls` says so); its network does not
    exist, so `create` makes it with ICC off, once; an existing network with ICC on is refused."""
    require_root("bridges")
    lacks(eng.backend, Feature.NO_ICC)
    env, folder = user_profiles
    net, other = f"{NET_PREFIX}p{secrets.token_hex(1)}", f"{NET_PREFIX}q{secrets.token_hex(1)}"
    (folder / "isolated.toml").write_text(f'description = "test"\nnetwork = "{net}"\nicc = false\ncpus = 0.5\n')
    (folder / "clash.toml").write_text(f'network = "{other}"\nicc = false\n')
    listed = {p["name"]: p for p in json.loads(cli("profile", "ls", "--json", env=env).stdout)}
    assert listed["isolated"]["origin"] == "user" and listed["isolated"]["shadows"]
    try:
        first, second = eng.name_for("net1"), eng.name_for("net2")
        proc = eng.cli("create", "--profile", "isolated", "--name", first, eng.image, "true", env=env)
        assert proc.returncode == 0, proc.stderr
        assert f"created network {eng.name}:{net} (icc off)" in proc.stderr
        proc = eng.cli("create", "--profile", "isolated", "--name", second, eng.image, "true", env=env)
        assert proc.returncode == 0 and "created network" not in proc.stderr, proc.stderr
        shown = json.loads(eng.cli("network", "inspect", "--json", f"{eng.name}:{net}").stdout)
        shown = shown[0] if isinstance(shown, list) else shown
        assert shown["icc"] is False
        assert set(shown["containers"]) >= {first, second}
        assert _limits(eng, first)[0] == 0.5
        made = eng.cli("network", "create", f"{eng.name}:{other}")
        assert made.returncode == 0, made.stderr
        assert_clean_error(eng.cli("create", "--profile", "clash", eng.image, "true", env=env), 4, other, "icc")
    finally:
        eng.cleanup()
        for name in (net, other):
            eng.cli("network", "rm", "--force", f"{eng.name}:{name}")


def test_docker_host_nests_in_each_backends_form(eng: Engine) -> None:
    """LXD: security.nesting=true (and the syscall intercepts where the server has them); LXC:
    LXC's nesting.conf and the cgroup hierarchies mounted inside once started; Docker: refused."""
    if Feature.NESTING not in eng.backend.features():
        assert_clean_error(eng.cli("create", "--profile", "docker-host", eng.image), 6, "nesting")
        with pytest.raises(Unsupported):
            eng.backend.require(Feature.NESTING)
        return  # the refusal, before any engine call, is this engine's whole answer: no skip in CI
    name = eng.name_for("dh")
    proc = eng.cli("create", "--profile", "docker-host", "--name", name, eng.image)
    assert proc.returncode == 0, proc.stderr
    assert "privileged" not in proc.stderr, "docker-host stays unprivileged"
    extra = json.loads(eng.cli("inspect", "--json", name).stdout)[0]["extra"]
    if "security" in extra:  # LXD
        assert extra["security"]["security.nesting"] == "true"
        assert extra["security"]["security.privileged"] == "false"
        from cman.backends.lxd import nesting

        if nesting.can_intercept(eng.backend.client.host_info):  # type: ignore[attr-defined]
            assert extra["security"]["security.syscalls.intercept.mknod"] == "true"
            assert extra["security"]["security.syscalls.intercept.setxattr"] == "true"
        return
    config = Path(extra["config"]).read_text()  # LXC
    assert extra["nesting"] is True and extra["privileged"] is False
    assert "lxc.include = /usr/share/lxc/config/nesting.conf\n" in config
    assert "lxc.mount.auto = cgroup:rw:force\n" in config
    assert "lxc.idmap = u 0 " in config, "still a user namespace"
    assert eng.cli("start", name).returncode == 0
    try:
        seen = eng.cli("exec", name, "sh", "-c", "ls /sys/fs/cgroup; grep ' /sys/fs/cgroup' /proc/self/mountinfo")
        assert seen.returncode == 0, seen.stderr
        controllers = set(seen.stdout.split())
        assert {"cpu", "memory", "devices", "pids"} <= controllers, seen.stdout
        assert " - cgroup cgroup rw" in seen.stdout or ",memory" in seen.stdout, seen.stdout
        writable = eng.cli("exec", name, "sh", "-c", "mkdir /sys/fs/cgroup/memory/cmantest && "
                           "rmdir /sys/fs/cgroup/memory/cmantest && echo ok")
        assert writable.stdout.strip() == "ok", writable.stderr
    finally:
        with contextlib.suppress(Exception):
            eng.cli("rm", "-f", name)
