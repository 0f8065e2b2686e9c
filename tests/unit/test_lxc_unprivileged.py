"""Unprivileged LXC containers and secrets, without an engine: the id map, the config it
gives, the shifted rootfs, files written for the container's root, and the environment
that never goes on lxc-attach's argv."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cman._sys import files
from cman._sys import proc as _proc
from cman.backends.lxc import LxcBackend, attach, config, connection, idmap, jobhost, tools
from cman.errors import EngineUnavailable, ExitCode, InvalidValue
from cman.models import ContainerSpec, State, StdIO

MAP = idmap.IdMap(100000, 200000)


# -- the id map --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "want"), [
    ("root:100000:65536\n", 100000),
    ("_lxd:100000:10000001\nroot:300000:10000001\n", 300000),
    ("0:500000:65536\n", 500000),  # by number
    ("root:100000:1000\nroot:700000:65536\n", 700000),  # the first range large enough
    ("root:100000:1000\n", None),
    ("rooty:100000:65536\n", None),
    ("root:x:65536\nroot:100000\n# root:1:65536\n", None),
    ("", None),
])
def test_subordinate_ranges(text: str, want: int | None) -> None:
    assert idmap.parse_subid(text, "root", 0) == want


def test_the_id_map_comes_from_subuid_and_subgid(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("root:100000:65536\n")
    (tmp_path / "subgid").write_text("root:200000:65536\n")
    assert idmap.host_idmap(tmp_path / "subuid", tmp_path / "subgid", uid=0) == MAP


@pytest.mark.parametrize("missing", ["subuid", "subgid"])
def test_no_id_range_says_how_to_add_one(tmp_path: Path, missing: str) -> None:
    for name in ("subuid", "subgid"):
        (tmp_path / name).write_text("" if name == missing else "root:100000:65536\n")
    with pytest.raises(EngineUnavailable) as info:
        idmap.host_idmap(tmp_path / "subuid", tmp_path / "subgid", uid=0)
    err = info.value
    assert err.exit_code == ExitCode.UNAVAILABLE
    assert missing in str(err) and "usermod --add-subuids" in err.fix and "--privileged" in err.fix


# -- the config --------------------------------------------------------------------------------


def _config(tmp_path: Path, *, privileged: bool, apparmor: bool) -> str:
    paths = tools.Paths(str(tmp_path), "web")
    spec = ContainerSpec(image="img", name="web", privileged=privileged)
    return config.render_config(config.config_entries(paths, spec, {}, [], idmap=None if privileged else MAP,
                                                      apparmor=apparmor))


def test_unprivileged_by_default_with_lxcs_generated_profile_where_apparmor_is(tmp_path: Path) -> None:
    text = _config(tmp_path, privileged=False, apparmor=True)
    assert "lxc.idmap = u 0 100000 65536" in text and "lxc.idmap = g 0 200000 65536" in text
    assert "lxc.apparmor.profile = generated" in text
    assert "unconfined" not in text
    common = next((c for c in config.COMMON_CONF if os.path.isfile(c)), None)
    if common:  # LXC installed: userns.conf comes right after common.conf
        userns = os.path.join(os.path.dirname(common), "userns.conf")
        assert f"lxc.include = {common}\n" in text and f"lxc.include = {userns}\n" in text
        assert text.index(common) < text.index(userns) < text.index("lxc.idmap")


def test_no_apparmor_key_where_the_host_has_none(tmp_path: Path) -> None:
    for privileged in (False, True):
        assert "lxc.apparmor" not in _config(tmp_path, privileged=privileged, apparmor=False)


def test_privileged_has_no_id_map_and_is_unconfined_only_where_apparmor_is(tmp_path: Path) -> None:
    text = _config(tmp_path, privileged=True, apparmor=True)
    assert "lxc.idmap" not in text and "userns.conf" not in text
    assert "lxc.apparmor.profile = unconfined" in text
    assert "# privileged (--privileged)" in text


def test_an_unprivileged_config_needs_an_id_map(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="id map"):
        config.config_entries(tools.Paths(str(tmp_path), "web"), ContainerSpec(image="img"), {}, [])


def test_apparmor_is_seen_from_securityfs(tmp_path: Path) -> None:
    assert not idmap.host_has_apparmor(tmp_path / "apparmor")
    (tmp_path / "apparmor").mkdir()
    assert idmap.host_has_apparmor(tmp_path / "apparmor")


def test_mapped_root_is_read_from_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "config"
    conf.write_text("lxc.uts.name = x\nlxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 200000 65536\n")
    assert config.mapped_root(conf) == (100000, 200000)
    conf.write_text("lxc.uts.name = x\n")
    assert config.mapped_root(conf) is None, "a privileged container's root is the host's"
    assert config.mapped_root(tmp_path / "missing") is None


# -- the shifted rootfs ------------------------------------------------------------------------


def test_shift_gives_every_file_to_the_mapped_ids_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"x")
    os.link(root / "bin" / "busybox", root / "bin" / "hardlink")
    (root / "bin" / "su").write_bytes(b"x")
    os.chmod(root / "bin" / "su", 0o4755)
    outside = tmp_path / "host-file"
    outside.write_text("host")
    os.symlink(outside, root / "bin" / "escape")
    deep = root
    for i in range(50):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    chowned: list[tuple[str, int, int]] = []
    chmodded: list[tuple[str, int]] = []
    monkeypatch.setattr(idmap.os, "lchown", lambda p, u, g: chowned.append((str(p), u, g)))
    monkeypatch.setattr(idmap.os, "chmod", lambda p, m: chmodded.append((str(p), m)))
    me = os.geteuid(), os.getegid()
    count = idmap.shift_tree(root, MAP)
    paths = [p for p, _, _ in chowned]
    assert count == len(chowned) == len(set(paths))
    assert str(root) in paths and str(root / "bin" / "escape") in paths and str(deep) in paths
    assert sum(p.endswith(("busybox", "hardlink")) for p in paths) == 1, "a hard link is shifted once"
    for _path, uid, gid in chowned:
        assert (uid, gid) == (MAP.uid + me[0], MAP.gid + me[1]) or (me[0] >= 65536)
    assert chmodded == [(str(root / "bin" / "su"), 0o4755)], "set-id bits come back after chown"
    assert outside.stat().st_uid == me[0], "a symlink is never followed"


def test_ids_outside_the_map_become_nobody() -> None:
    assert idmap._shifted(0, 100000, 65536) == 100000
    assert idmap._shifted(1000, 100000, 65536) == 101000
    assert idmap._shifted(70000, 100000, 65536) == 100000 + 65534
    assert idmap._shifted(-1, 100000, 65536) == 100000 + 65534


def test_a_folder_the_containers_root_cannot_pass_is_named(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(EngineUnavailable) as info:
        idmap.check_reachable(str(closed / "lxc"), MAP)
    assert "cannot pass through" in str(info.value) and "--privileged" in info.value.fix
    idmap.check_reachable("/usr/share", MAP)  # 0755 all the way


# -- create: refused before any work --------------------------------------------------------------


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LxcBackend:
    monkeypatch.setenv(tools.ENV_LXC_PATH, str(tmp_path / "lxc"))
    monkeypatch.setenv(tools.ENV_IMAGES, str(tmp_path / "images"))
    monkeypatch.setattr(connection.shutil, "which", lambda name: f"/usr/bin/{name}")
    (tmp_path / "lxc").mkdir()
    return LxcBackend()


def _forbid_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"a tool ran: {args!r}")

    monkeypatch.setattr(_proc, "run", forbidden)
    monkeypatch.setattr(attach, "spawn", forbidden)


def test_create_without_subordinate_ids_fails_before_any_work(backend: LxcBackend, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").write_text("")
    monkeypatch.setattr(idmap, "SUBUID", tmp_path / "empty")
    _forbid_tools(monkeypatch)
    with pytest.raises(EngineUnavailable, match="subordinate ids"):
        backend.create(ContainerSpec(image="img", name="c1"))
    assert os.listdir(backend.lxcpath) == []


def test_create_under_a_closed_lxc_path_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    (closed / "lxc").mkdir()
    monkeypatch.setenv(tools.ENV_LXC_PATH, str(closed / "lxc"))
    monkeypatch.setenv(tools.ENV_IMAGES, str(tmp_path / "images"))
    monkeypatch.setattr(connection.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr("cman.backends.lxc.containers.host_idmap", lambda: MAP)
    backend = LxcBackend()
    image = backend.store.root / ("ab" * 32)
    image.mkdir(parents=True)
    (image / "metadata.json").write_text(json.dumps({"id": "sha256:" + "ab" * 32, "file": "rootfs.tar",
                                                     "aliases": ["img"], "created": "2024-01-01T00:00:00+00:00"}))
    _forbid_tools(monkeypatch)
    with pytest.raises(EngineUnavailable, match="cannot pass through"):
        backend.create(ContainerSpec(image="img", name="c1"))
    assert [e for e in os.listdir(closed / "lxc") if not e.startswith(".")] == []


# -- files cman writes into a rootfs -----------------------------------------------------------


def _container(backend: LxcBackend, name: str, conf: str, meta: dict[str, Any] | None = None) -> tools.Paths:
    paths = tools.Paths(backend.lxcpath, name)
    (paths.rootfs / "var" / "log").mkdir(parents=True)
    paths.config.write_text(conf)
    paths.meta.write_text(json.dumps(meta or {"managed": True}))
    return paths


def test_job_files_belong_to_the_containers_root(backend: LxcBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    from cman._sys import files as _files

    owners: list[tuple[int, int]] = []
    monkeypatch.setattr(_files.os, "fchown", lambda fd, u, g: owners.append((u, g)))
    monkeypatch.setattr(_files.os, "chown", lambda p, u, g, **kw: owners.append((u, g)))
    _container(backend, "c1", "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 200000 65536\n")
    backend.write_file("c1", "/var/log/cman/job.rc", b"")
    assert owners == [(100000, 200000), (100000, 200000)], "the new folder and the file"
    owners.clear()
    _container(backend, "c2", "lxc.uts.name = c2\n")
    backend.write_file("c2", "/var/log/cman/job.rc", b"3\n")
    assert owners == [], "a privileged container's root is the host's: nothing to change"


def test_no_file_is_written_into_a_container_that_is_gone(backend: LxcBackend) -> None:
    from cman.errors import ContainerNotFound

    paths = _container(backend, "c1", "lxc.uts.name = c1\n")
    paths.config.unlink()  # LXC is destroying an ephemeral container
    with pytest.raises(ContainerNotFound):
        backend.write_file("c1", "/var/log/cman/job.rc", b"")
    assert not (paths.rootfs / "var/log/cman").exists()


def test_hostile_job_files_are_not_opened(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "var" / "log" / "cman").mkdir(parents=True)
    rc = root / "var" / "log" / "cman" / "job.rc"
    rc.write_text("3\n")
    fd = files.open_beneath(root, "/var/log/cman/job.rc")
    assert fd is not None and os.read(fd, 10) == b"3\n"
    os.close(fd)
    rc.unlink()
    os.mkfifo(rc)
    assert files.open_beneath(root, "/var/log/cman/job.rc") is None, "a FIFO must not block cman"
    assert files.read_beneath(root, "/var/log/cman/job.rc") is None, "nor a read of it"
    rc.unlink()
    (tmp_path / "host").write_text("secret")
    rc.symlink_to(tmp_path / "host")
    with pytest.raises(files.UnsafePath):
        files.open_beneath(root, "/var/log/cman/job.rc")
    (root / "var" / "log" / "cman").rename(root / "var" / "log" / "moved")
    (root / "var" / "log" / "cman").symlink_to(tmp_path)
    with pytest.raises(files.UnsafePath):
        files.open_beneath(root, "/var/log/cman/host")  # a symlinked folder neither


def test_wait_reads_an_ephemeral_jobs_code_after_lxc_destroyed_it(backend: LxcBackend,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _container(backend, "eph", "lxc.ephemeral = 1\n", {"managed": True, "command": ["x"],
                                                               "auto_remove": True})
    rc = paths.rootfs / "var" / "log" / "cman" / "job.rc"
    rc.parent.mkdir()
    rc.write_bytes(b"")
    states = iter([State.RUNNING] * 3)

    def job_state(ref: str) -> State | None:
        state = next(states, None)
        if state is None and paths.dir.exists():
            # the job writes its code in place (`echo $? > job.rc`), halts, and LXC destroys
            # the container, rootfs and all, between two looks
            with open(rc, "r+b") as fh:
                fh.write(b"3\n")
            shutil.rmtree(paths.dir)
        return state

    monkeypatch.setattr(backend, "job_state", job_state)
    monkeypatch.setattr("cman.jobs.POLL", 0.01)
    assert jobhost.wait_ephemeral(backend, paths) == 3


def test_wait_of_an_ephemeral_job_killed_before_its_code_is_137(backend: LxcBackend,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _container(backend, "eph", "lxc.ephemeral = 1\n")
    states = iter([State.RUNNING])
    monkeypatch.setattr(backend, "job_state", lambda ref: next(states, None))
    monkeypatch.setattr("cman.jobs.POLL", 0.01)
    assert jobhost.wait_ephemeral(backend, paths) == 137


# -- the environment: names on argv, values in lxc-attach's own environment ------------------------


def test_values_never_reach_argv() -> None:
    env = attach.attach_env({"IMAGE_VAR": "from-image"}, {"CMANTEST_SECRET": "s3cr3t value", "EMPTY": ""}, tty=False)
    argv, environ = attach.attach_argv("/var/lib/lxc", "web", ["sh", "-c", "echo $CMANTEST_SECRET"], env)
    assert not any("s3cr3t" in a or "from-image" in a for a in argv)
    assert environ == env
    assert "--clear-env" in argv
    for key in env:
        assert f"--keep-var={key}" in argv
    assert not any(a.startswith("--set-var") for a in argv)
    assert argv[argv.index("--") + 1:] == ["sh", "-c", "echo $CMANTEST_SECRET"]
    assert os.path.isabs(argv[0]) or argv[0] == "lxc-attach", "found on cman's PATH, not the container's"


def test_loader_variables_do_not_act_on_lxc_attach() -> None:
    env = {"PATH": "/bin", "LD_PRELOAD": "/lib/x.so", "LD_LIBRARY_PATH": "/opt/lib", "OTHER": "1"}
    argv, environ = attach.attach_argv("/var/lib/lxc", "web", ["app", "arg"], env)
    assert "LD_PRELOAD" not in environ and "LD_LIBRARY_PATH" not in environ
    assert environ["CMAN_HOSTENV_LD_PRELOAD"] == "/lib/x.so" and environ["OTHER"] == "1"
    assert "--keep-var=CMAN_HOSTENV_LD_LIBRARY_PATH" in argv
    assert argv[argv.index("--") + 1:] == ["/bin/sh", "-c", attach.RESTORE, "cman-env", "app", "arg"]
    assert "/lib/x.so" not in " ".join(argv)


def test_the_restore_script_gives_the_names_back() -> None:
    """What runs in the container, run here by /bin/sh: a value with spaces, quotes and $ survives."""
    value = "/opt/my lib:$HOME'\""
    out = subprocess.run(
        ["/bin/sh", "-c", attach.RESTORE, "cman-env", "/bin/sh", "-c",
         'printf "%s|%s|%s" "$LD_LIBRARY_PATH" "${CMAN_HOSTENV_LD_LIBRARY_PATH-gone}" "${LD_PRELOAD-unset}"'],
        env={"PATH": "/usr/bin:/bin", "CMAN_HOSTENV_LD_LIBRARY_PATH": value}, capture_output=True, text=True,
        timeout=10, check=True,
    ).stdout
    assert out == f"{value}|gone|unset"


def test_a_spawned_attach_gets_the_environment_not_the_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def spawn(argv: list[str], **popen: Any) -> Any:
        seen.update(argv=argv, **popen)
        raise RuntimeError("stop here")

    monkeypatch.setattr(attach, "spawn", spawn)
    env = {"PATH": "/bin", "CMANTEST_SECRET": "value-1"}
    argv, environ = attach.attach_argv("/p", "web", ["true"], env)
    with pytest.raises(RuntimeError):
        attach.run_attached(argv, StdIO(None, io.BytesIO(), io.BytesIO()), tty=False, env=environ)
    assert seen["env"] == env and "value-1" not in " ".join(seen["argv"])


def test_store_work_folders_of_dead_processes_are_stale(tmp_path: Path) -> None:
    from cman.backends.lxc.store import ImageStore, work_owner

    store = ImageStore(tmp_path)
    mine = store.new_workdir()
    assert work_owner(mine.name) == _proc.mark()
    dead = tmp_path / ".tmp-999999999-5-abcd"
    dead.mkdir()
    young_unmarked = tmp_path / ".tmp-0011aabbccdd"
    young_unmarked.mkdir()
    image = tmp_path / ("ab" * 32)
    (image / ".rootfs.u1-g1-n65536.tmp-999999999-5-ef01").mkdir(parents=True)
    assert store.stale_workdirs() == [dead, image / ".rootfs.u1-g1-n65536.tmp-999999999-5-ef01"]
    old = time.time() - 7200
    os.utime(young_unmarked, (old, old))
    assert young_unmarked in store.stale_workdirs(), "an unmarked one of an older cman, when old"
    assert mine not in store.stale_workdirs()


def test_an_unprivileged_containers_folder_lets_its_root_pass_only(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(idmap.os, "chown", lambda p, u, g: calls.append(("chown", (u, g))))
    monkeypatch.setattr(idmap.os, "chmod", lambda p, m: calls.append(("chmod", m)))
    idmap.prepare_container_dir(tmp_path / "u", MAP)
    assert calls == [("chown", (0, MAP.gid)), ("chmod", 0o710)]
    assert stat.S_IMODE((tmp_path / "u").stat().st_mode) == 0o700, "private until then"


def test_post_stop_hooks_that_only_sleep_are_cleared(tmp_path: Path) -> None:
    """Debian's lxcfs adds `lxc.hook.post-stop = .../lxc.reboot.hook`, a bare `sleep 0.5s` run after
    every stop (half of a `run --rm true`). cman clears post-stop hooks only when each one included
    is such a sleep; any other hook keeps them all."""
    from cman.backends.lxc.config import render_config, sleep_only_post_stop

    common = tmp_path / "common.conf"
    common.write_text("lxc.include = common.conf.d/\n")
    (tmp_path / "common.conf.d").mkdir()
    hook = tmp_path / "reboot.hook"
    hook.write_text("#!/bin/sh -eu\n\nsleep 0.5s\n")
    assert not sleep_only_post_stop(str(common))  # no hooks: nothing to clear
    (tmp_path / "common.conf.d" / "00-lxcfs.conf").write_text(
        f"lxc.hook.mount = /x/lxc.mount.hook\nlxc.hook.post-stop = {hook}\n")
    assert sleep_only_post_stop(str(common))
    assert render_config([("lxc.hook.post-stop", "")]) == "lxc.hook.post-stop =\n"
    other = tmp_path / "other.hook"
    other.write_text("#!/bin/sh\nsleep 1\nrm -rf /run/thing\n")
    (tmp_path / "common.conf.d" / "10-other.conf").write_text(f"lxc.hook.post-stop = {other}\n")
    assert not sleep_only_post_stop(str(common))
    assert not sleep_only_post_stop(None)
    with pytest.raises(InvalidValue):
        render_config([("lxc.hook.pre-start", "")])  # only the cleared keys may be empty
