"""LXD-only behaviour on the real daemon, beyond the shared conformance suite.

System-container semantics (the job, its log files, ephemeral ``--rm -d``), the config
keys cman writes, image import/alias/prune, the unreachable image server, the lean
``ps`` path, and a remote daemon over HTTPS with a client certificate.

Every container and image is named ``cmantest-<random>-...`` and removed in teardown,
also when a test fails. The HTTPS test changes the daemon's ``core.https_address`` and
trust store for its duration and restores both afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from cman._sys.proc import mark
from cman.backends.lxd import LxdBackend
from cman.errors import CmanError
from cman.models import RUN_LABEL, ContainerSpec, State

from ..conftest import ROOTFS, assert_clean_error, cli, not_selected, unavailable

pytestmark = pytest.mark.engine

RUN = f"cmantest-{secrets.token_hex(3)}"
LOCAL_ENV = {"CMAN_LXD_ENDPOINT": ""}
"""Every CLI call here talks to the local socket unless a test says otherwise."""


def lxd_cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**LOCAL_ENV, **kw.pop("env", {})}
    return cli(*args, backend="lxd", env=env, **kw)


def lxc_client(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The LXD command-line client (Debian's lxd-client calls it ``lxc``)."""
    return subprocess.run(["lxc", *args], capture_output=True, text=True, timeout=60, check=check)


@pytest.fixture(scope="module")
def backend() -> Iterator[LxdBackend]:
    not_selected("lxd")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CMAN_LXD_ENDPOINT", raising=False)
        status = LxdBackend.probe()
        if not status.reachable:
            unavailable(f"lxd: {status.problem} (fix: {status.fix})")
        b = LxdBackend()
        try:
            yield b
        finally:
            with contextlib.suppress(CmanError):
                for c in b.containers(all=True):
                    if c.name.startswith(RUN):
                        b.remove(c.name, force=True)
            b.close()


@pytest.fixture(scope="module")
def image(backend: LxdBackend) -> Iterator[str]:
    if not ROOTFS.is_file():
        unavailable(f"test rootfs {ROOTFS} is missing: run scripts/setup-engines.sh")
    name = f"{RUN}-bb"
    proc = lxd_cli("image", "import", str(ROOTFS), name)
    assert proc.returncode == 0, proc.stderr
    try:
        yield name
    finally:
        with contextlib.suppress(CmanError):
            backend.image_remove(name, force=True)


@pytest.fixture
def names(backend: LxdBackend) -> Iterator[list[str]]:
    made: list[str] = []
    try:
        yield made
    finally:
        for name in made:
            with contextlib.suppress(CmanError):
                backend.remove(name, force=True)


def new_name(names: list[str], tag: str) -> str:
    name = f"{RUN}-{tag}-{secrets.token_hex(2)}"
    names.append(name)
    return name


def wait_for(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def config_of(name: str) -> dict[str, str]:
    proc = lxc_client("query", f"/1.0/instances/{name}")
    return dict(json.loads(proc.stdout)["config"])


# -- what cman writes into LXD ----------------------------------------------------------------


def test_create_writes_cman_config(backend: LxdBackend, image: str, names: list[str]) -> None:
    name = new_name(names, "cfg")
    proc = lxd_cli("create", "--name", name, "-e", "GREETING=hi there", "-l", "team=blue",
                   "--cpus", "0.5", "--memory", "64m", image, "sh", "-c", "echo $GREETING")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == name
    config = config_of(name)
    assert config["user.cman.managed"] == "true"
    assert json.loads(config["user.cman.command"]) == ["sh", "-c", "echo $GREETING"]
    assert config["environment.GREETING"] == "hi there"
    assert config["user.cman.label.team"] == "blue"
    assert config["limits.cpu.allowance"] == "50ms/100ms"
    assert int(config["limits.memory"]) == 64 * 1024 * 1024
    assert config["user.cman.image"] == image
    info = backend.inspect(name)
    assert info.state == State.CREATED and info.status == "Created"
    assert info.labels == {"team": "blue"} and info.managed


@pytest.mark.parametrize("bad", ["1abc", "abc-", "a_b", "a.b", "x" * 64])
def test_lxd_name_rules(image: str, bad: str) -> None:
    assert_clean_error(lxd_cli("create", "--name", bad, image, "true"), 2, "invalid container name")


# -- the job: run -d, start, wait, logs ----------------------------------------------------


def test_detached_job_stops_the_container_and_keeps_its_code_and_logs(
    backend: LxdBackend, image: str, names: list[str]
) -> None:
    name = new_name(names, "job")
    proc = lxd_cli("run", "-d", "--name", name, image, "sh", "-c", "echo to-out; echo to-err >&2; sleep 1; exit 3")
    assert proc.returncode == 0, proc.stderr
    assert backend.inspect(name).state == State.RUNNING
    assert backend.wait(name) == 3
    info = backend.inspect(name)
    assert info.state == State.STOPPED and info.exit_code == 3 and info.status == "Exited (3)"
    logs = lxd_cli("logs", name)
    assert logs.stdout == "to-out\n" and logs.stderr == "to-err\n"
    # start runs the job again; the logs accumulate, as with Docker
    assert lxd_cli("start", name).returncode == 0
    assert backend.wait(name) == 3
    assert lxd_cli("logs", name).stdout == "to-out\nto-out\n"


def test_job_is_not_a_shell_string(backend: LxdBackend, image: str, names: list[str]) -> None:
    name = new_name(names, "argv")
    tricky = "$(echo injected); `id`; 'quoted' \"double\" * ;exit 9"
    assert lxd_cli("run", "-d", "--name", name, image, "echo", tricky).returncode == 0
    assert backend.wait(name) == 0
    assert lxd_cli("logs", name).stdout == tricky + "\n"


def test_stop_records_a_killed_job(backend: LxdBackend, image: str, names: list[str]) -> None:
    name = new_name(names, "kill")
    assert lxd_cli("run", "-d", "--name", name, image, "sleep", "300").returncode == 0
    assert lxd_cli("stop", "-t", "5", name).returncode == 0
    assert backend.inspect(name).exit_code == 143  # SIGTERM during the clean shutdown


def test_run_d_rm_is_ephemeral(backend: LxdBackend, image: str, names: list[str]) -> None:
    name = new_name(names, "eph")
    assert lxd_cli("run", "-d", "--rm", "--name", name, image, "sh", "-c", "sleep 2; exit 4").returncode == 0
    assert backend.inspect(name).extra["ephemeral"] is True
    assert backend.wait(name) == 4
    wait_for(lambda: lxd_cli("inspect", name).returncode == 3, 20, "the ephemeral container to go")


def test_rm_holds_when_cman_is_killed(backend: LxdBackend, image: str, names: list[str]) -> None:
    """SIGKILL of a foreground ``run --rm``: the instance is ephemeral and its job ends it, so
    LXD removes it soon after the command ends, with no cman left to do it.

    Failed before: only ``run -d --rm`` was ephemeral; the foreground one stayed forever."""
    name = new_name(names, "kill9")
    env = {k: v for k, v in os.environ.items() if k != "CMAN_BACKEND"}
    env.update(LOCAL_ENV)
    child = subprocess.Popen([sys.executable, "-m", "cman", "--backend", "lxd", "run", "--rm", "--name", name,
                              image, "sleep", "3"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        # Kill cman once its job runs (the job's `sleep 3` is a process of the container).
        wait_for(lambda: "sleep 3" in lxc_client("exec", name, "--", "ps", check=False).stdout, 60,
                 "the job to start")
        child.kill()
        child.wait(timeout=30)
        killed_at = time.monotonic()
        assert backend.job_state(name) is not None, "still there when cman died: the engine removes it, not cman"
        assert backend.inspect(name).extra["ephemeral"] is True
        wait_for(lambda: backend.job_state(name) is None, 30, "LXD to remove the container after its command ended")
        assert time.monotonic() - killed_at < 30
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert_clean_error(lxd_cli("inspect", name), 3, "no such container")


def test_rm_run_killed_before_its_job_started_is_pruned(backend: LxdBackend, image: str, names: list[str]) -> None:
    """The window --rm cannot close itself (cman killed between boot and the job's start):
    ``cman system prune`` finds the running ephemeral instance without a job and removes it."""
    name = new_name(names, "nojob")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    label = mark(dead.pid)
    dead.wait()
    backend.create(ContainerSpec(image=image, name=name, command=("sleep", "300"), auto_remove=True,
                                 labels={RUN_LABEL: label}))
    never = new_name(names, "never")
    backend.create(ContainerSpec(image=image, name=never, command=("true",), labels={RUN_LABEL: label}))
    alive = new_name(names, "alive")
    backend.create(ContainerSpec(image=image, name=alive, command=("true",), labels={RUN_LABEL: mark()}))
    with backend_started(backend, name):
        dry = backend.prune_leftovers(dry_run=True)
        mine = sorted(line for line in dry if RUN in line)
        assert mine == sorted([
            f"container {name}: booted by a run that was killed before the container's job began (cman process {dead.pid} is gone)",
            f"container {never}: created by a run that was killed before it started (cman process {dead.pid} is gone)",
        ])
        assert backend.job_state(name) is not None and backend.job_state(never) is not None
        assert sorted(line for line in backend.prune_leftovers() if RUN in line) == mine
    assert backend.job_state(name) is None and backend.job_state(never) is None
    assert backend.job_state(alive) is not None, "a live run's container is never touched"


@contextlib.contextmanager
def backend_started(backend: LxdBackend, name: str) -> Iterator[None]:
    """Boot the container as run does, without starting its job (what a kill leaves)."""
    with contextlib.suppress(CmanError):
        backend._boot(name)
    yield


def test_stop_waits_longer_than_the_client_timeout(backend: LxdBackend, image: str, names: list[str]) -> None:
    """An operation that outlasts pylxd's client timeout (here 3 s, 120 s by default) is waited
    for, in steps: ``stop -t 6`` of a container whose init ignores the halt signal takes 6 s
    of LXD's clean shutdown, then the kill. Failed before: EngineTimeout after 3 s (exit 7)."""
    import pylxd

    name = new_name(names, "slowstop")
    assert lxd_cli("run", "-d", "--name", name, image, "sleep", "300").returncode == 0
    lxc_client("config", "set", name, "raw.lxc", "lxc.signal.halt = SIGCONT")  # init ignores it: no clean stop
    lxc_client("restart", "--force", name)
    slow = LxdBackend()
    slow._client = pylxd.Client(endpoint="/var/lib/lxd/unix.socket" if not os.environ.get("LXD_DIR")
                                else os.path.join(os.environ["LXD_DIR"], "unix.socket"), timeout=3)
    try:
        started = time.monotonic()
        slow.stop(name, timeout=6)
        took = time.monotonic() - started
    finally:
        slow.close()
    assert backend.inspect(name).state == State.STOPPED
    assert took >= 5, f"LXD's clean shutdown was waited for ({took:.1f} s)"


def test_env_values_that_would_be_lxc_config_lines_are_refused(image: str, names: list[str]) -> None:
    """LXD writes environment.K as a ``lxc.environment`` line: a newline in a value would add
    a config line of the caller's choosing. Refused before any call (exit 2; 125 for run),
    naming the key and never printing the value. Failed before: accepted."""
    name = new_name(names, "envnl")
    literal = lxd_cli("run", "--rm", "--name", name, "-e", "API_TOKEN=s3cret\\nlxc.cap.drop =", image,
                      "sh", "-c", 'printf %s "$API_TOKEN"')
    assert (literal.returncode, literal.stdout) == (0, "s3cret\\nlxc.cap.drop ="), "a backslash and n are fine"
    for value in ("s3cret\nlxc.apparmor.profile = unconfined", "s3cret\rx", "s3cret\nlxc.cap.drop ="):
        proc = lxd_cli("run", "--rm", "--name", name, "-e", f"API_TOKEN={value}", image, "true")
        assert_clean_error(proc, 125, "API_TOKEN", "newline")
        assert "s3cret" not in proc.stderr, "the value is never printed"
        assert_clean_error(lxd_cli("create", "--name", name, "-e", f"API_TOKEN={value}", image, "true"), 2,
                           "API_TOKEN")
    assert lxd_cli("inspect", name).returncode == 3, "nothing was created"


def test_privileged_only_when_asked(image: str, names: list[str]) -> None:
    plain, root = new_name(names, "unpriv"), new_name(names, "priv")
    assert lxd_cli("create", "--name", plain, image, "true").returncode == 0
    assert config_of(plain)["security.privileged"] == "false"
    proc = lxd_cli("create", "--privileged", "--name", root, image, "true")
    assert proc.returncode == 0, proc.stderr
    assert config_of(root)["security.privileged"] == "true"
    assert "privileged" in proc.stderr, "cman says so on stderr"


def test_foreground_run_records_the_job(backend: LxdBackend, image: str, names: list[str]) -> None:
    name = new_name(names, "fg")
    proc = lxd_cli("run", "--name", name, image, "sh", "-c", "echo hello-fg; echo oops >&2; exit 6")
    assert proc.returncode == 6 and proc.stdout == "hello-fg\n"
    info = backend.inspect(name)
    assert info.state == State.STOPPED and info.exit_code == 6
    logs = lxd_cli("logs", name)
    assert logs.stdout == "hello-fg\n" and logs.stderr == "oops\n"
    assert backend.wait(name) == 6


def test_run_without_command_boots_a_system_container(backend: LxdBackend, image: str, names: list[str]) -> None:
    name = new_name(names, "sys")
    proc = lxd_cli("run", "--name", name, image)
    assert proc.returncode == 0, proc.stderr
    info = backend.inspect(name)
    assert info.state == State.RUNNING and info.command == ()
    ps = lxd_cli("exec", name, "ps")
    assert "init" in ps.stdout
    assert lxd_cli("stop", "-t", "10", name).returncode == 0
    assert backend.inspect(name).exit_code is None  # no job, no code
    assert lxd_cli("logs", name).returncode == 0  # the console log


def test_logs_follow_ends_with_the_job(image: str, names: list[str]) -> None:
    name = new_name(names, "follow")
    assert lxd_cli("run", "-d", "--name", name, image, "sh", "-c",
                   "for i in 1 2 3; do echo line-$i; sleep 1; done").returncode == 0
    proc = lxd_cli("logs", "-f", name, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout == "line-1\nline-2\nline-3\n"


def test_exec_stdin_stays_open_across_keepalives(image: str, names: list[str]) -> None:
    name = new_name(names, "stdin")
    assert lxd_cli("run", "-d", "--name", name, image, "sleep", "300").returncode == 0
    env = {**os.environ, **LOCAL_ENV}
    env.pop("CMAN_BACKEND", None)
    child = subprocess.Popen([sys.executable, "-m", "cman", "--backend", "lxd", "exec", "-i", name, "cat"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert child.stdin is not None
        child.stdin.write(b"first\n")
        child.stdin.flush()
        time.sleep(6)  # LXD pings the websockets meanwhile
        child.stdin.write(b"second\n")
        out, err = child.communicate(timeout=30)  # writes nothing more, closes stdin: EOF
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert out == b"first\nsecond\n"


def test_exec_it_follows_window_changes(image: str, names: list[str]) -> None:
    name = new_name(names, "winch")
    assert lxd_cli("run", "-d", "--name", name, image, "sleep", "300").returncode == 0
    env = {**os.environ, **LOCAL_ENV}
    env.pop("CMAN_BACKEND", None)
    child = pexpect.spawn(sys.executable, ["-m", "cman", "--backend", "lxd", "exec", "-it", name, "sh"],
                          dimensions=(24, 80), timeout=30, encoding="utf-8", env=env)
    try:
        child.expect("# ")
        child.setwinsize(40, 132)
        time.sleep(0.5)
        child.sendline("echo SIZE-$(stty size | tr ' ' x)")
        child.expect("SIZE-40x132")
        child.sendline("exit 2")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 2


def test_missing_command_is_explained(image: str, names: list[str]) -> None:
    name = new_name(names, "nocmd")
    assert lxd_cli("run", "-d", "--name", name, image, "sleep", "300").returncode == 0
    proc = lxd_cli("exec", name, "no-such-tool")
    assert proc.returncode == 127
    assert "no-such-tool: command not found" in proc.stderr
    quiet = lxd_cli("exec", name, "sh", "-c", "exit 127")
    assert quiet.returncode == 127 and quiet.stderr == ""  # a real 127 is not "explained"
    exec_stopped = lxd_cli("stop", "-t", "1", name)
    assert exec_stopped.returncode == 0
    assert_clean_error(lxd_cli("exec", name, "true"), 125, "not running")


# -- images ---------------------------------------------------------------------------------


def _variant_tarball(path: Path, marker: str) -> Path:
    """The busybox rootfs plus one file, so the image differs."""
    with tarfile.open(ROOTFS) as src, tarfile.open(path, "w:gz") as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        data = marker.encode()
        info = tarfile.TarInfo("etc/cman-marker")
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))
    return path


def test_image_import_reuse_alias_move_history_prune(backend: LxdBackend, tmp_path: Path) -> None:
    name = f"{RUN}-img-{secrets.token_hex(2)}"
    try:
        first = json.loads(lxd_cli("image", "import", str(ROOTFS), name, "--json").stdout)
        again = json.loads(lxd_cli("image", "import", str(ROOTFS), name, "--json").stdout)
        assert first["id"] == again["id"], "the same tarball gives the same image"
        assert name in first["tags"]
        history = json.loads(lxd_cli("image", "history", name, "--json").stdout)
        assert len(history) == 1 and history[0]["id"] == first["id"]
        other = _variant_tarball(tmp_path / "variant.tar.gz", "v2")
        moved = json.loads(lxd_cli("image", "import", str(other), name, "--json").stdout)
        assert moved["id"] != first["id"]
        old = [i for i in backend.images() if i.id == first["id"]]
        assert old and old[0].tags == (), "the alias moved: the old image is unnamed now"
        pruned = json.loads(lxd_cli("image", "prune", "--json").stdout)
        assert first["id"] in pruned["removed"]
        assert moved["id"] not in pruned["removed"]
        assert lxd_cli("image", "inspect", name).returncode == 0
    finally:
        for img in backend.images():
            if any(t.startswith(f"{RUN}-img") for t in img.tags):
                with contextlib.suppress(CmanError):
                    backend.image_remove(img.id, force=True)


def test_image_inspect_by_fingerprint_prefix(backend: LxdBackend, image: str) -> None:
    full = backend.image_inspect(image)
    assert backend.image_inspect(full.id[:12]).id == full.id
    assert full.architecture and full.size and full.extra["properties"]["name"] == image


def _daemon_egress_is_blocked() -> bool:
    """True when the daemon's HTTPS goes to a proxy on loopback (scripts/setup-engines.sh
    sets one that nothing listens on): then a pull cannot send a packet outside."""
    proxy = lxc_client("config", "get", "core.proxy_https", check=False).stdout.strip()
    return proxy.startswith(("http://127.", "127.", "http://localhost"))


def test_pull_from_an_unreachable_server_fails_in_one_line() -> None:
    if not _daemon_egress_is_blocked():
        unavailable("the daemon has no loopback egress proxy (scripts/setup-engines.sh sets one): "
                    "a pull might leave the machine")
    started = time.monotonic()
    proc = lxd_cli("pull", "images:debian/12")
    assert_clean_error(proc, 5, "cannot be reached", "images.linuxcontainers.org")
    assert time.monotonic() - started < 30
    run = lxd_cli("run", "--rm", "debian:12", "true")  # the short name maps to images:debian/12
    assert_clean_error(run, 125, "cannot be reached")


@pytest.mark.parametrize("ref", ["https://127.0.0.1:8443", "http://127.0.0.1:alias", "images:"])
def test_pull_refuses_malformed_remotes_without_a_call(ref: str) -> None:
    assert_clean_error(lxd_cli("pull", ref), 2)


# -- engine, errors, speed ----------------------------------------------------------------------


def test_daemon_not_running_says_how_to_start_it() -> None:
    proc = lxd_cli("ps", env={"LXD_DIR": f"/nonexistent/{RUN}"})
    assert_clean_error(proc, 5, "lxd --group root > /var/log/lxd.log 2>&1 & lxd waitready")


def test_ps_does_not_import_pylxd(backend: LxdBackend) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CMAN_BACKEND"}
    env["CMAN_LXD_ENDPOINT"] = ""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "cman", "--backend", "lxd", "ps", "-a"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not {"pylxd", "requests", "ws4py"} & imported


# -- a remote daemon over HTTPS ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fingerprint(cert: Path) -> str:
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
                         capture_output=True, text=True, check=True).stdout
    return out.split("=", 1)[1].strip().replace(":", "").lower()


@pytest.fixture(scope="module")
def https_remote(backend: LxdBackend, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Make the local daemon listen on 127.0.0.1:<free port>, trust a fresh client
    certificate, and give the CMAN_LXD_* environment for it; undo both afterwards."""
    if shutil.which("lxc") is None or shutil.which("openssl") is None:
        unavailable("the lxc client (lxd-client) and openssl are needed for the HTTPS test")
    server_cert = Path(os.environ.get("LXD_DIR", "/var/lib/lxd")) / "server.crt"
    if not server_cert.is_file():
        unavailable(f"the daemon's certificate {server_cert} is not readable")
    tmp = tmp_path_factory.mktemp("lxd-https")
    crt, key = tmp / "client.crt", tmp / "client.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1",
                    "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", f"/CN={RUN}-client"],
                   capture_output=True, check=True, timeout=60)
    old_address = lxc_client("config", "get", "core.https_address").stdout.strip()
    port = _free_port()
    fingerprint = _fingerprint(crt)
    lxc_client("config", "set", "core.https_address", f"127.0.0.1:{port}")
    try:
        lxc_client("config", "trust", "add", str(crt), "--name", f"{RUN}-client")
        yield {
            "CMAN_LXD_ENDPOINT": f"https://127.0.0.1:{port}",
            "CMAN_LXD_CERT": str(crt),
            "CMAN_LXD_KEY": str(key),
            "CMAN_LXD_VERIFY": str(server_cert),
            "crt": str(crt),
            "fingerprint": fingerprint,
        }
    finally:
        lxc_client("config", "trust", "remove", fingerprint, check=False)
        if old_address:
            lxc_client("config", "set", "core.https_address", old_address, check=False)
        else:
            lxc_client("config", "unset", "core.https_address", check=False)


@pytest.fixture
def elsewhere(https_remote: dict[str, str]) -> Iterator[dict[str, str]]:
    """The daemon on the address of a bridge of the test's own (10.253.X.1, no ports): only
    loopback counts as this host to cman, so this endpoint is a remote one. The certificate
    names no such address, hence CMAN_LXD_VERIFY=false (a client's explicit choice)."""
    dev, addr = f"cmt{secrets.token_hex(4)}", f"10.253.{secrets.randbelow(250) + 1}.1"
    old_address = lxc_client("config", "get", "core.https_address").stdout.strip()
    subprocess.run(["ip", "link", "add", dev, "type", "bridge"], check=True, timeout=30)
    try:
        subprocess.run(["ip", "addr", "add", f"{addr}/32", "dev", dev], check=True, timeout=30)
        subprocess.run(["ip", "link", "set", dev, "up"], check=True, timeout=30)
        port = _free_port()
        lxc_client("config", "set", "core.https_address", f"{addr}:{port}")
        yield {**{k: v for k, v in https_remote.items() if k.startswith("CMAN_")},
               "CMAN_LXD_ENDPOINT": f"https://{addr}:{port}", "CMAN_LXD_VERIFY": "false"}
    finally:
        lxc_client("config", "set", "core.https_address", old_address, check=False)
        subprocess.run(["ip", "link", "del", dev], check=False, timeout=30)


def test_stats_on_a_remote_come_from_the_api(elsewhere: dict[str, str], image: str, names: list[str]) -> None:
    """Issue 10: an LXD on another host's address is sampled through LXD's instance state,
    twice over the interval: the same columns, and no user/system split (LXD has none)."""
    env = elsewhere
    status = json.loads(cli("engine", "status", "--json", backend="lxd", env=env).stdout)[0]
    assert status["reachable"] is True, status
    busy, idle = new_name(names, "api-busy"), new_name(names, "api-idle")
    for name, cmd in ((busy, ["sh", "-c", "while :; do :; done"]), (idle, ["sleep", "300"])):
        proc = cli("run", "-d", "--name", name, image, *cmd, backend="lxd", env=env)
        assert proc.returncode == 0, proc.stderr
    proc = cli("stats", "--no-stream", "--json", "--interval", "2", busy, idle, backend="lxd", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    for row in rows.values():
        assert (row["status"], row["cgroup_version"], row["pid"]) == ("ok", "lxd-api", None), row
        assert row["cpu_user_percent"] is None and row["cpu_system_percent"] is None, row
        assert row["cpu_usage_ns"] > 0 and row["interval_s"] >= 1.5, row
    assert rows[busy]["cpu_percent"] > 20 and rows[idle]["cpu_percent"] < 5, rows
    human = cli("stats", "--no-stream", "--interval", "0.5", busy, backend="lxd", env=env)
    assert human.returncode == 0 and busy in human.stdout, human.stderr


def test_remote_over_https(https_remote: dict[str, str], backend: LxdBackend, image: str, names: list[str]) -> None:
    env = {k: v for k, v in https_remote.items() if k.startswith("CMAN_")}

    def remote(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return cli(*args, backend="lxd", env={**env, **kw.pop("env", {})}, **kw)

    status = json.loads(remote("engine", "status", "--json").stdout)[0]
    assert status["reachable"] is True and status["endpoint"] == env["CMAN_LXD_ENDPOINT"], status
    assert remote("ps", "-a", "--json").returncode == 0
    assert image in remote("images").stdout
    # a foreground run: exec websockets over TLS, exit code and both streams
    fg = remote("run", "--rm", image, "sh", "-c", "echo over-https; echo err-https >&2; exit 5")
    assert (fg.returncode, fg.stdout, fg.stderr) == (5, "over-https\n", "err-https\n")
    # create / start / exec with stdin / logs / delete
    name = new_name(names, "https")
    assert remote("create", "--name", name, image, "sh", "-c", "echo job-https; sleep 300").returncode == 0
    assert remote("start", name).returncode == 0
    assert name in {c["name"] for c in json.loads(remote("ps", "--json").stdout)}
    piped = remote("exec", "-i", name, "cat", input="stdin over https\n")
    assert piped.returncode == 0 and piped.stdout == "stdin over https\n"
    assert remote("exec", name, "sh", "-c", "exit 3").returncode == 3
    wait_for(lambda: "job-https" in remote("logs", name).stdout, 20, "the job's log")
    assert remote("rm", "-f", name).returncode == 0
    assert remote("inspect", name).returncode == 3
    # the wrong pinned certificate and an untrusted client are one-line errors that say what to do
    assert_clean_error(remote("ps", env={"CMAN_LXD_VERIFY": https_remote["crt"]}), 5, "CMAN_LXD_VERIFY")
    lxc_client("config", "trust", "remove", https_remote["fingerprint"])
    assert_clean_error(remote("ps"), 5, "does not trust", "lxc config trust add")
