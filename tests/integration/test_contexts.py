"""Contexts against real engines: this machine's Docker, a SECOND dockerd (its own socket,
data root, exec root and pidfile: a second "host"), and a second LXD daemon over HTTPS with
a trusted client certificate (a remote; see tests/integration/contextlab.py). Each test runs the real CLI with a config folder of
the module's own; containers are named with PREFIX and removed at the end, also on failure."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cman.backends.docker import DockerBackend
from cman.backends.lxd import LxdBackend

from ..conftest import PREFIX, ROOTFS, assert_clean_error, cli, not_selected, require_root, unavailable
from .contextlab import LabUnavailable, lxd_https, second_dockerd

pytestmark = pytest.mark.engine

DOCKER_IMAGE = "local/busybox:latest"
LOCAL = {"DOCKER_HOST": "unix:///var/run/docker.sock", "CMAN_LXD_ENDPOINT": "", "CMAN_CONTEXT": ""}


@dataclass
class Lab:
    env: dict[str, str]
    """The CLI's environment: the module's config folder, the local engines by default."""
    second: str
    """The second dockerd's URL."""
    lxd_image: str
    made: list[tuple[str, str]] = field(default_factory=list)
    """(context, name) of every container a test made."""

    def cman(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **kw.pop("env", {})}  # type: ignore[dict-item]
        return cli(*args, env=env, **kw)  # type: ignore[arg-type]

    def name(self, context: str, tag: str) -> str:
        name = f"{PREFIX}-{tag}"
        self.made.append((context, name))
        return name


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    not_selected("docker")
    not_selected("lxd")
    require_root("a second dockerd and LXD's HTTPS listener")
    for cls in (DockerBackend, LxdBackend):
        with pytest.MonkeyPatch.context() as mp:
            for k, v in LOCAL.items():
                mp.setenv(k, v)
            status = cls.probe()
        if not status.reachable:
            unavailable(f"{status.backend}: {status.problem}")
    if not ROOTFS.is_file():
        unavailable(f"test rootfs {ROOTFS} is missing: run scripts/setup-engines.sh")
    config = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-config-"))
    env = {**LOCAL, "XDG_CONFIG_HOME": str(config)}
    lxd_image = f"{PREFIX}-ctx-bb"
    with contextlib.ExitStack() as stack:
        try:
            second = stack.enter_context(second_dockerd(image=DOCKER_IMAGE))
            remote = stack.enter_context(lxd_https(PREFIX))
        except LabUnavailable as err:
            unavailable(str(err))
        there = {**env, "LXD_DIR": remote.lxd_dir}  # the second daemon's own socket
        imported = cli("image", "import", str(ROOTFS), lxd_image, backend="lxd", env=there)
        assert imported.returncode == 0, imported.stderr
        lab = Lab(env, second.url, lxd_image)
        for args in (("one", "--docker", "unix:///var/run/docker.sock"), ("two", "--docker", second.url),
                     ("far", "--lxd", remote.url, "--cert", remote.cert, "--key", remote.key, "--verify", remote.verify)):
            made = lab.cman("context", "create", *args)
            assert made.returncode == 0, made.stderr
        try:
            yield lab
        finally:
            for context, name in lab.made:
                lab.cman("--context", context, "rm", "-f", name)
            subprocess.run(["rm", "-rf", str(config)], check=False)


def _run_everywhere(lab: Lab, tag: str) -> dict[str, str]:
    """One running container per context: context -> name."""
    names = {}
    for context, image in (("one", DOCKER_IMAGE), ("two", DOCKER_IMAGE), ("far", lab.lxd_image)):
        name = lab.name(context, f"{tag}-{context}")
        proc = lab.cman("--context", context, "run", "-d", "--name", name, image, "sleep", "300")
        assert proc.returncode == 0, proc.stderr
        names[context] = name
    return names


def test_ps_context_all_lists_both_docker_hosts_and_lxd(lab: Lab) -> None:
    names = _run_everywhere(lab, "all")
    proc = lab.cman("--context", "all", "ps", "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    listed = {(c["context"], c["backend"], c["name"]) for c in json.loads(proc.stdout)}
    assert {("one", "docker", names["one"]), ("two", "docker", names["two"]), ("far", "lxd", names["far"])} <= listed
    # the second host holds only its own container: the contexts really are different engines
    two = {name for context, _, name in listed if context == "two"}
    assert names["one"] not in two and names["two"] in two
    table = lab.cman("--context", "all", "ps").stdout.splitlines()
    assert table[0].split()[:3] == ["CONTEXT", "BACKEND", "NAME"]
    assert any(line.split()[:3] == ["far", "lxd", names["far"]] for line in table[1:]), table
    quiet = lab.cman("--context", "all", "ps", "-q").stdout.split()
    assert {f"one/docker:{names['one']}", f"two/docker:{names['two']}", f"far/lxd:{names['far']}"} <= set(quiet)
    # the command-level spelling and --backend as a filter of the contexts
    dockers = json.loads(lab.cman("--context", "all", "--backend", "docker", "ps", "--json").stdout)
    assert {c["context"] for c in dockers} <= {"one", "two"} and any(c["context"] == "two" for c in dockers)


def test_an_unreachable_context_is_one_line_and_the_others_still_list(lab: Lab) -> None:
    env = {"XDG_CONFIG_HOME": tempfile.mkdtemp(prefix=f"{PREFIX}-gone-")}
    try:
        for args in (("two", "--docker", lab.second), ("gone", "--docker", "unix:///nonexistent/docker.sock")):
            assert lab.cman("context", "create", *args, env=env).returncode == 0
        proc = lab.cman("--context", "all", "ps", "-a", env=env)
        assert proc.returncode == 0, proc.stderr  # one context answered: exit 0
        assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("cman: context gone: ")
        assert proc.stdout.splitlines()[0].startswith("CONTEXT")
        assert lab.cman("context", "rm", "two", env=env).returncode == 0
        assert_clean_error(lab.cman("--context", "all", "ps", env=env), 5, "context gone")  # none answered
        images = lab.cman("--context", "all", "images", env=env)
        assert images.returncode == 5 and images.stderr.startswith("cman: context gone: ")
    finally:
        subprocess.run(["rm", "-rf", env["XDG_CONFIG_HOME"]], check=False)


def test_images_context_all(lab: Lab) -> None:
    proc = lab.cman("--context", "all", "images", "--json")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert {i["context"] for i in found} == {"one", "two", "far"}
    assert any(i["context"] == "far" and lab.lxd_image in (i.get("tags") or []) + [i.get("name")] for i in found) \
        or lab.lxd_image in proc.stdout


def test_run_and_rm_on_each_context_and_addressing(lab: Lab) -> None:
    names = _run_everywhere(lab, "addr")
    for context, name in names.items():
        backend = "lxd" if context == "far" else "docker"
        for ref in (f"{context}/{name}", f"{context}/{backend}:{name}"):
            got = lab.cman("inspect", "--json", ref)
            assert got.returncode == 0, got.stderr
            assert json.loads(got.stdout)[0]["name"] == name
        ex = lab.cman("exec", f"{context}/{name}", "sh", "-c", "echo in-$0; exit 3", context)
        assert (ex.returncode, ex.stdout) == (3, f"in-{context}\n"), ex.stderr
    # a name that exists only on the second host is not found through the first
    assert_clean_error(lab.cman("inspect", f"one/{names['two']}"), 3, "no such container")
    assert_clean_error(lab.cman("inspect", f"two/lxd:{names['two']}"), 2, "context two is docker, not lxd")
    assert_clean_error(lab.cman("inspect", f"nope/{names['two']}"), 3, "no such context: nope")
    # stop and rm in one command across three contexts
    refs = [f"{c}/{n}" for c, n in names.items()]
    assert lab.cman("stop", "-t", "1", *refs).stdout.split() == refs
    assert lab.cman("rm", "-f", *refs).returncode == 0
    for context, name in names.items():
        gone = lab.cman("--context", context, "ps", "-a", "--json")
        assert name not in {c["name"] for c in json.loads(gone.stdout)}, context


def test_context_use_env_and_option_precedence(lab: Lab) -> None:
    names = {"two": lab.name("two", "prec-two")}
    assert lab.cman("--context", "two", "run", "-d", "--name", names["two"], DOCKER_IMAGE, "sleep", "300").returncode == 0
    try:
        assert lab.cman("context", "use", "two").returncode == 0
        used = lab.cman("ps", "--json")
        assert names["two"] in {c["name"] for c in json.loads(used.stdout)}, used.stderr
        env_wins = lab.cman("ps", "--json", env={"CMAN_CONTEXT": "one"})
        assert names["two"] not in {c["name"] for c in json.loads(env_wins.stdout)}
        option_wins = lab.cman("--context", "two", "ps", "--json", env={"CMAN_CONTEXT": "one"})
        assert names["two"] in {c["name"] for c in json.loads(option_wins.stdout)}
        default = lab.cman("--context", "default", "--backend", "docker", "ps", "--json")
        assert names["two"] not in {c["name"] for c in json.loads(default.stdout)}
        status = json.loads(lab.cman("engine", "status", "--json").stdout)
        assert [s["endpoint"] for s in status] == [lab.second]
    finally:
        lab.cman("context", "use", "default")


def test_lxd_context_is_remote(lab: Lab) -> None:
    status = json.loads(lab.cman("--context", "far", "engine", "status", "--json").stdout)
    assert status[0]["reachable"] is True and status[0]["endpoint"].startswith("https://"), status


def test_stats_context_all(lab: Lab) -> None:
    names = _run_everywhere(lab, "stats")
    proc = lab.cman("--context", "all", "stats", "--no-stream", "--all", "--interval", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {(r["context"], r["name"]) for r in json.loads(proc.stdout)}
    assert {(c, n) for c, n in names.items()} <= rows, (rows, proc.stderr)
    table = lab.cman("--context", "all", "stats", "--no-stream", "--interval", "0.5").stdout.splitlines()
    assert table[0].split()[0] == "CONTEXT"
    assert_clean_error(lab.cman("--context", "all", "stats"), 2, "--no-stream")
    assert lab.cman("rm", "-f", *(f"{c}/{n}" for c, n in names.items())).returncode == 0
