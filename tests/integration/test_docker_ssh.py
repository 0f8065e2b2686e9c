"""DOCKER_HOST=ssh://... for real: the CLI against the local dockerd through a private sshd
on loopback (its own host key, client key, config and port; the system's sshd is never
started). The ssh client finds its key through a Host block in /etc/ssh/ssh_config.d,
because cman runs plain `ssh HOST docker system dial-stdio` as the docker CLI does. On the
"remote" side, `docker system dial-stdio` reaches the daemon through a recording proxy
(DOCKER_HOST set by the authorized key), so the tests see the request lines cman sent."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cman.backends.docker import DockerBackend
from cman.models import State

from ..conftest import PREFIX, assert_clean_error, cli, not_selected, require_root, unavailable
from .docker_proxy import RecordingProxy

pytestmark = pytest.mark.engine

IMAGE = "local/busybox:latest"
SSHD = "/usr/sbin/sshd"
SSH_CONFIG_D = Path("/etc/ssh/ssh_config.d")


@dataclass
class SshHost:
    alias: str
    """The Host name in the client config: DOCKER_HOST=ssh://ALIAS."""
    env: dict[str, str]
    proxy: RecordingProxy
    """What the remote end's `docker system dial-stdio` talks to."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sshd exited with {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError(f"sshd did not listen on 127.0.0.1:{port} within {seconds} s: {log.read_text()}")


def _includes_config_d() -> bool:
    try:
        text = Path("/etc/ssh/ssh_config").read_text()
    except OSError:
        return False
    return any(line.split()[:2] == ["Include", "/etc/ssh/ssh_config.d/*.conf"] for line in text.splitlines())


def _ssh_clients(alias: str) -> list[str]:
    """Command lines of ssh clients still running for ``alias`` (cman must not leave any behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv and os.path.basename(argv[0]) == b"ssh" and alias.encode() in argv:
                found.append(" ".join(a.decode(errors="replace") for a in argv))
    return found


@pytest.fixture(scope="module")
def ssh_host() -> Iterator[SshHost]:
    not_selected("docker")
    status = DockerBackend.probe()
    if not status.reachable:
        unavailable(f"docker: {status.problem}")
    require_root("a private sshd and a client config in /etc/ssh/ssh_config.d")
    missing = [p for p in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen"), shutil.which("docker")) if not p]
    if not os.path.exists(SSHD) or missing:
        unavailable("openssh-server, openssh-client and the docker CLI are needed (scripts/setup-engines.sh)")
    if not _includes_config_d():
        unavailable("/etc/ssh/ssh_config does not Include /etc/ssh/ssh_config.d/*.conf")

    alias = f"cmantest-{secrets.token_hex(4)}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{alias}-"))
    snippet = SSH_CONFIG_D / f"{alias}.conf"
    made_privsep_dir = not os.path.isdir("/run/sshd")
    proc: subprocess.Popen[bytes] | None = None
    proxy = RecordingProxy(tmp / "docker.sock")
    try:
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", alias, "-f", str(tmp / key)],
                           check=True, capture_output=True)
        # the session's environment: the remote docker CLI dials the recording proxy
        key = (tmp / "client_key.pub").read_text().strip()
        (tmp / "authorized_keys").write_text(f'environment="DOCKER_HOST={proxy.address}" {key}\n')
        port = _free_port()
        config = tmp / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {tmp / 'host_key'}\n"
            f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "PermitUserEnvironment DOCKER_HOST\n"
            f"PidFile {tmp / 'sshd.pid'}\nStrictModes no\n"
        )
        if made_privsep_dir:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = tmp / "sshd.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-e"], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        _wait_for_port(port, proc, log)
        snippet.write_text(
            f"# cman test {alias}: removed at the end of tests/integration/test_docker_ssh.py\n"
            f"Host {alias}\n    HostName 127.0.0.1\n    Port {port}\n    User root\n"
            f"    IdentityFile {tmp / 'client_key'}\n    IdentitiesOnly yes\n    StrictHostKeyChecking no\n"
            "    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n"
        )
        yield SshHost(alias, {"DOCKER_HOST": f"ssh://{alias}", "DOCKER_API_VERSION": ""}, proxy)
    finally:
        proxy.close()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        snippet.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if made_privsep_dir:
            with contextlib.suppress(OSError):
                os.rmdir("/run/sshd")


@pytest.fixture
def names() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:  # through the local socket: works even when the ssh path is broken
        cli("rm", "-f", name, backend="docker", env={"DOCKER_HOST": "unix:///var/run/docker.sock"})


def test_engine_status_over_ssh(ssh_host: SshHost) -> None:
    proc = cli("engine", "status", "--json", backend="docker", env=ssh_host.env)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)[0]
    assert status["reachable"] is True, status
    assert status["endpoint"] == f"ssh://{ssh_host.alias}"
    assert status["version"]


def test_run_over_ssh_keeps_exit_code_and_streams(ssh_host: SshHost) -> None:
    proc = cli("run", "--rm", IMAGE, "sh", "-c", "echo over-ssh; echo e >&2; exit 4", backend="docker",
               env=ssh_host.env)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.splitlines() == ["over-ssh"], proc.stdout
    assert proc.stderr.splitlines() == ["e"], proc.stderr


def test_detached_container_over_ssh(ssh_host: SshHost, names: list[str]) -> None:
    name = f"{PREFIX}-ssh"
    names.append(name)
    env = ssh_host.env
    run = cli("run", "-d", "--name", name, IMAGE, "sh", "-c", "echo boot-out; echo boot-err >&2; exec sleep 60",
              backend="docker", env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip(), "run -d prints the container id"

    listed = json.loads(cli("ps", "--json", backend="docker", env=env).stdout)
    assert {c["name"]: c["state"] for c in listed}.get(name) == "running", listed

    inspected = cli("inspect", "--json", name, backend="docker", env=env)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)[0]["name"] == name

    ex = cli("exec", name, "sh", "-c", "echo x; echo y >&2; exit 3", backend="docker", env=env)
    assert ex.returncode == 3, ex.stderr
    assert ex.stdout.splitlines() == ["x"] and ex.stderr.splitlines() == ["y"], (ex.stdout, ex.stderr)

    # stdin's EOF must reach the remote process through ssh, or `cat` never ends
    piped = cli("exec", "-i", name, "cat", backend="docker", env=env, input="through-stdin\n", timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "through-stdin\n"
    # the remote process ends while stdin still flows: ssh stops reading it; keep the output and exit code
    early = cli("exec", "-i", name, "sh", "-c", "head -n 1; exit 6", backend="docker", env=env,
                input="y" * 99 + "\n" * 1 + "z" * 20_000_000, timeout=60)
    assert early.returncode == 6, early.stderr
    assert early.stdout == "y" * 99 + "\n"

    deadline = time.monotonic() + 10
    while True:
        logs = cli("logs", name, backend="docker", env=env)
        assert logs.returncode == 0, logs.stderr
        if "boot-err" in logs.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert logs.stdout.splitlines() == ["boot-out"], logs.stdout
    assert logs.stderr.splitlines() == ["boot-err"], logs.stderr

    rm = cli("rm", "-f", name, backend="docker", env=env)
    assert rm.returncode == 0, rm.stderr
    listed = json.loads(cli("ps", "-a", "--json", backend="docker", env=env).stdout)
    assert name not in {c["name"] for c in listed}

    assert _ssh_clients(ssh_host.alias) == [], "cman left ssh clients running"


def test_stats_over_ssh_come_from_the_engine_api(ssh_host: SshHost, names: list[str]) -> None:
    """Issue 10: a Docker behind ssh:// is another host's, so `stats` reads Docker's stats
    endpoint twice over the interval, with the same columns (Docker splits user and system)."""
    env = ssh_host.env
    busy = f"{PREFIX}-ssh-busy"
    names.append(busy)
    run = cli("run", "-d", "--name", busy, IMAGE, "sh", "-c", "while :; do :; done", backend="docker", env=env)
    assert run.returncode == 0, run.stderr
    proc = cli("stats", "--no-stream", "--json", "--interval", "2", busy, backend="docker", env=env)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)[0]
    assert (row["status"], row["cgroup_version"], row["pid"]) == ("ok", "docker-api", None), row
    assert row["cpu_percent"] > 20 and row["interval_s"] >= 1.5, row
    assert row["cpu_user_percent"] is not None and row["cpu_system_percent"] is not None, row
    assert cli("rm", "-f", busy, backend="docker", env=env).returncode == 0


def test_unreachable_ssh_host_is_one_clean_error(ssh_host: SshHost) -> None:
    port = _free_port()  # nothing listens there
    t0 = time.monotonic()
    proc = cli("ps", backend="docker", env={"DOCKER_HOST": f"ssh://root@127.0.0.1:{port}"}, timeout=60)
    elapsed = time.monotonic() - t0
    assert_clean_error(proc, 5, "docker", "connection refused")
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_ssh_requests_are_versioned_after_one_ping(ssh_host: SshHost) -> None:
    from cman.backends.docker.api import negotiate

    from .test_docker import _server_version

    before = len(ssh_host.proxy.requests())
    proc = cli("run", "--rm", IMAGE, "sh", "-c", "exit 6", backend="docker", env=ssh_host.env)
    assert proc.returncode == 6, proc.stderr
    sent = [path for _, path in ssh_host.proxy.requests()[before:]]
    spoken = negotiate(_server_version())
    assert sent[0] == "/_ping" and sent.count("/_ping") == 1, sent  # once per cman process, not per ssh
    assert len(sent) > 3 and all(p.startswith(f"/v{spoken}/") for p in sent[1:]), sent

    pinned = cli("ps", backend="docker", env={**ssh_host.env, "DOCKER_API_VERSION": "1.40"})
    assert pinned.returncode == 0, pinned.stderr
    assert ssh_host.proxy.requests()[-1] == ("GET", "/v1.40/containers/json")


def test_one_ssh_for_many_requests_in_one_process(ssh_host: SshHost, names: list[str],
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ps + inspect + stop in ONE cman process go over one kept `ssh ... dial-stdio` (HTTP/1.1
    keep-alive), not one ssh each. Counted twice: by an `ssh` first on PATH that logs each
    start, and by the connections the far end's dial-stdio made to the daemon."""
    name = f"{PREFIX}-keep"
    names.append(name)
    local = {"DOCKER_HOST": "unix:///var/run/docker.sock"}
    made = cli("run", "-d", "--name", name, IMAGE, "sleep", "300", backend="docker", env=local)
    assert made.returncode == 0, made.stderr

    real_ssh = shutil.which("ssh")
    assert real_ssh is not None
    log = tmp_path / "ssh-starts"
    wrapper = tmp_path / "bin" / "ssh"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> {log}\nexec {real_ssh} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    for k, v in ssh_host.env.items():
        monkeypatch.setenv(k, v)
    before = _cman_connections(ssh_host.proxy)

    backend = DockerBackend()
    try:
        assert name in {c.name for c in backend.containers(all=True)}
        assert backend.inspect(name).name == name
        backend.stop(name, timeout=1)
        assert backend.inspect(name).state == State.STOPPED
    finally:
        backend.close()
    assert len(log.read_text().split()) == 1, "one ssh process for the whole session"
    assert _cman_connections(ssh_host.proxy) - before == 1, "one daemon connection carried every request"
    deadline = time.monotonic() + 5
    while _ssh_clients(ssh_host.alias) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ssh_clients(ssh_host.alias) == [], "close() ends the kept ssh"


def test_kept_ssh_survives_the_far_end_closing_it(ssh_host: SshHost, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept connection dies (the far end's dial-stdio or sshd went away): the next request
    goes over a new ssh instead of failing."""
    for k, v in ssh_host.env.items():
        monkeypatch.setenv(k, v)
    backend = DockerBackend()
    try:
        backend.containers()
        transport = backend.api
        idle = transport._idle  # type: ignore[attr-defined]
        assert idle is not None and idle.ssh is not None
        idle.ssh.proc.kill()  # the stream ends under the idle connection
        idle.ssh.proc.wait(10)
        backend.containers()
        assert transport.dialed == 2  # type: ignore[attr-defined]
    finally:
        backend.close()


def _cman_connections(proxy: RecordingProxy) -> int:
    """Connections through the recording proxy that carried at least one of cman's requests."""
    from .docker_proxy import _DOCKER_CLI, _REQUEST

    with proxy._lock:
        streams = list(proxy._seen)
    return sum(1 for data in streams if any(not _DOCKER_CLI.search(m.group(3)) for m in _REQUEST.finditer(data)))
