"""Docker-only behaviour on the real engine: DOCKER_HOST over TCP, socket permissions,
detached --rm, separate log streams, the lean start-up path, the API version on the wire,
hostile references, --rm under SIGKILL, --privileged and the leftovers of killed runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cman._sys.proc import mark
from cman.backends.docker import DockerBackend
from cman.backends.docker.api import CLIENT_API_VERSION, negotiate
from cman.errors import ContainerNotFound
from cman.models import RUN_LABEL, ContainerSpec

from ..conftest import PREFIX, assert_clean_error, cli, not_selected, unavailable
from .docker_proxy import DOCKER_SOCKET, RecordingProxy

pytestmark = pytest.mark.engine

IMAGE = "local/busybox:latest"


@pytest.fixture(scope="module", autouse=True)
def docker_up() -> None:
    not_selected("docker")
    status = DockerBackend.probe()
    if not status.reachable:
        unavailable(f"docker: {status.problem}")


@pytest.fixture
def names() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        cli("rm", "-f", name, backend="docker")


class _TcpToUnix:
    """A loopback TCP port that forwards to the Docker socket: a real tcp:// DOCKER_HOST."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.path)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._copy, args=(a, b), daemon=True).start()

    @staticmethod
    def _copy(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.stop = True
        self.server.close()


def test_docker_host_tcp(names: list[str]) -> None:
    proxy = _TcpToUnix("/var/run/docker.sock")
    try:
        env = {"DOCKER_HOST": f"tcp://127.0.0.1:{proxy.port}"}
        name = f"{PREFIX}-tcp"
        names.append(name)
        run = cli("run", "--rm", IMAGE, "sh", "-c", "echo over-tcp; exit 4", backend="docker", env=env)
        assert run.returncode == 4, run.stderr
        assert "over-tcp" in run.stdout
        assert cli("run", "-d", "--name", name, IMAGE, "sleep", "60", backend="docker", env=env).returncode == 0
        listed = json.loads(cli("ps", "--json", backend="docker", env=env).stdout)
        assert name in {c["name"] for c in listed}
        status = json.loads(cli("engine", "status", "--json", backend="docker", env=env).stdout)[0]
        assert status["reachable"] and status["endpoint"].startswith("tcp://")
    finally:
        proxy.close()


def test_docker_host_tcp_nothing_listening() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    proc = cli("ps", backend="docker", env={"DOCKER_HOST": f"tcp://127.0.0.1:{port}"})
    assert_clean_error(proc, 5, "docker")


def test_permission_denied_on_socket_says_docker_group() -> None:
    """A real socket only root may open, probed by an unprivileged process (a forked child)."""
    tmp_path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    sock_path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen()
    os.chmod(sock_path, 0o600)
    os.chmod(tmp_path, 0o755)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, probe, report
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.environ["DOCKER_HOST"] = f"unix://{sock_path}"
            status = DockerBackend.probe()
            os.write(write_fd, json.dumps(status.to_dict()).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd) as f:
        status = json.loads(f.read())
    server.close()
    shutil.rmtree(tmp_path)
    assert status["reachable"] is False
    assert "permission denied" in status["problem"]
    assert "docker group" in status["fix"]


def test_missing_socket_says_how_to_start() -> None:
    proc = cli("engine", "status", "--json", backend="docker", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    status = json.loads(proc.stdout)[0]
    assert proc.returncode == 5
    assert "not running" in status["problem"] and "dockerd" in status["fix"]


def test_detached_rm_is_removed_by_the_engine(names: list[str]) -> None:
    name = f"{PREFIX}-drm"
    names.append(name)
    assert cli("run", "-d", "--rm", "--name", name, IMAGE, "sleep", "1", backend="docker").returncode == 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        listed = json.loads(cli("ps", "-a", "--json", backend="docker").stdout)
        if name not in {c["name"] for c in listed}:
            return
        time.sleep(0.5)
    raise AssertionError("run -d --rm container still exists after its command ended")


def test_logs_keep_streams_apart(names: list[str]) -> None:
    name = f"{PREFIX}-logs"
    names.append(name)
    proc = cli("run", "--name", name, IMAGE, "sh", "-c", "echo on-out; echo on-err >&2", backend="docker")
    assert proc.returncode == 0
    logs = cli("logs", name, backend="docker")
    assert logs.stdout == "on-out\n"
    assert logs.stderr == "on-err\n"


def test_ps_hot_path_imports_no_sdk() -> None:
    code = (
        "import sys, json; from cman.cli import main; rc = main(['--backend', 'docker', 'ps', '-a', '-q']); "
        "print(json.dumps([rc, sorted(m for m in ('docker', 'pylxd', 'requests', 'tenacity', 'rich') if m in sys.modules)]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    rc, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rc == 0 and loaded == [], proc.stderr


# -- the Engine API version on the wire ---------------------------------------------------------------


def _server_version() -> str:
    from cman._sys import unixhttp

    resp = unixhttp.request(DOCKER_SOCKET, "GET", "/_ping")
    resp.read_all()
    return resp.headers["api-version"]


def test_every_request_on_the_socket_is_versioned_after_one_ping(names: list[str], tmp_path: Path) -> None:
    proxy = RecordingProxy(tmp_path / "docker.sock")
    spoken = negotiate(_server_version())
    env = {"DOCKER_HOST": proxy.address, "DOCKER_API_VERSION": ""}
    name = f"{PREFIX}-ver"
    names.append(name)
    commands = [("run", "--rm", IMAGE, "sh", "-c", "exit 3"), ("run", "-d", "--name", name, IMAGE, "sleep", "60"),
                ("exec", name, "true"), ("logs", name), ("ps", "-a"), ("images",), ("rm", "-f", name)]
    try:
        for args in commands:
            before = len(proxy.requests())
            proc = cli(*args, backend="docker", env=env)
            assert proc.returncode == (3 if "--rm" in args else 0), (args, proc.stderr)
            sent = [path for _, path in proxy.requests()[before:]]
            # one cman process, one connection: one ping, first; then versioned paths only
            assert sent[0] == "/_ping" and sent.count("/_ping") == 1, (args, sent)
            assert sent[1:] and all(p.startswith(f"/v{spoken}/") for p in sent[1:]), (args, sent)
    finally:
        proxy.close()


def test_docker_api_version_reaches_the_socket(names: list[str], tmp_path: Path) -> None:
    proxy = RecordingProxy(tmp_path / "docker.sock")
    try:
        env = {"DOCKER_HOST": proxy.address, "DOCKER_API_VERSION": "1.40"}
        proc = cli("run", "--rm", IMAGE, "sh", "-c", "echo pinned", backend="docker", env=env)
        assert proc.returncode == 0 and proc.stdout == "pinned\n", proc.stderr
        sent = [path for _, path in proxy.requests()]
        assert sent and all(p.startswith("/v1.40/") for p in sent), sent  # as the docker CLI: no negotiation
    finally:
        proxy.close()
    bad = cli("ps", backend="docker", env={"DOCKER_API_VERSION": "latest"})
    assert_clean_error(bad, 2, "DOCKER_API_VERSION")


def test_tcp_requests_are_versioned_too(names: list[str]) -> None:
    proxy = RecordingProxy()
    try:
        env = {"DOCKER_HOST": proxy.address, "DOCKER_API_VERSION": ""}
        proc = cli("run", "--rm", IMAGE, "sh", "-c", "exit 5", backend="docker", env=env)
        assert proc.returncode == 5, proc.stderr
        sent = [path for _, path in proxy.requests()]
        spoken = negotiate(_server_version())
        assert sent[0] == "/_ping" and sent.count("/_ping") == 1, sent
        assert all(p.startswith(f"/v{spoken}/") for p in sent[1:]), sent
        assert spoken == min((_server_version(), CLIENT_API_VERSION), key=lambda v: tuple(map(int, v.split("."))))
    finally:
        proxy.close()


def test_empty_docker_host_is_the_local_socket() -> None:
    proc = cli("engine", "status", "--json", backend="docker", env={"DOCKER_HOST": ""})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["endpoint"] == "unix:///var/run/docker.sock"
    assert cli("ps", "-a", backend="docker", env={"DOCKER_HOST": ""}).returncode == 0


# -- hostile names and references never reach a URL ---------------------------------------------------


@pytest.mark.parametrize("args", [
    ("network", "inspect", "../containers/x"), ("network", "rm", "../x"), ("image", "rm", "../../etc/passwd"),
    ("image", "inspect", "a.b/../x"), ("image", "history", "local/../../x"), ("rm", "a/../../x"),
    ("inspect", ".."), ("logs", "../x"), ("stop", "../../containers/json"), ("exec", "../x", "true"),
    ("start", "x?all=1"), ("run", "--network", "../x", IMAGE, "true"),
])
def test_hostile_references_are_usage_errors(args: tuple[str, ...]) -> None:
    proc = cli(*args, backend="docker")
    want = 125 if args[0] in ("run", "exec") else 2  # run and exec: docker run's 125 for their own failures
    assert_clean_error(proc, want, "invalid")


# -- --rm holds when cman is SIGKILLed; exit codes stay exact -------------------------------------------


def _state(backend: DockerBackend, name: str) -> str | None:
    try:
        return str(backend.inspect(name).state)
    except ContainerNotFound:
        return None


def test_run_rm_holds_when_cman_is_sigkilled(names: list[str]) -> None:
    backend = DockerBackend()
    name = f"{PREFIX}-k9rm"
    names.append(name)
    env = {k: v for k, v in os.environ.items() if k != "CMAN_BACKEND"}
    proc = subprocess.Popen([sys.executable, "-m", "cman", "--backend", "docker", "run", "--rm", "--name", name,
                             IMAGE, "sleep", "3"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while _state(backend, name) != "running":
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    killed = time.monotonic()
    assert _state(backend, name) == "running", "cman's death must not end the container's command"
    while _state(backend, name) is not None:
        assert time.monotonic() - killed < 3 + 5, "the container outlived its command by more than 5 s"
        time.sleep(0.2)
    backend.close()


def test_run_rm_keeps_the_exit_code_and_removes(names: list[str]) -> None:
    name = f"{PREFIX}-rm7"
    names.append(name)
    proc = cli("run", "--rm", "--name", name, IMAGE, "sh", "-c", "echo out; exit 7", backend="docker")
    assert proc.returncode == 7 and proc.stdout == "out\n", proc.stderr
    assert proc.stderr == "", "an auto-removed container is no cleanup failure"
    listed = json.loads(cli("ps", "-a", "--json", backend="docker").stdout)
    assert name not in {c["name"] for c in listed}


# -- --privileged is asked for, never the default ----------------------------------------------------------


def test_privileged_only_when_asked(names: list[str]) -> None:
    backend = DockerBackend()
    plain, privileged = f"{PREFIX}-conf", f"{PREFIX}-priv"
    names += [plain, privileged]
    assert cli("create", "--name", plain, IMAGE, "true", backend="docker").returncode == 0
    proc = cli("create", "--privileged", "--name", privileged, IMAGE, "true", backend="docker")
    assert proc.returncode == 0, proc.stderr
    assert "privileged" in proc.stderr, "cman says so on stderr"
    assert backend.inspect(plain).extra["host_config"]["Privileged"] is False
    assert backend.inspect(privileged).extra["host_config"]["Privileged"] is True
    backend.close()


# -- leftovers of runs killed before the start -----------------------------------------------------------------


def test_prune_removes_created_containers_of_killed_runs(names: list[str]) -> None:
    backend = DockerBackend()
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead_mark = f"{gone.pid}:1"
    killed, alive, started = f"{PREFIX}-left", f"{PREFIX}-alive", f"{PREFIX}-started"
    names += [killed, alive, started]
    backend.create(ContainerSpec(image=IMAGE, name=killed, command=("true",), labels={RUN_LABEL: dead_mark}))
    backend.create(ContainerSpec(image=IMAGE, name=alive, command=("true",), labels={RUN_LABEL: mark()}))
    backend.create(ContainerSpec(image=IMAGE, name=started, command=("sleep", "60"), labels={RUN_LABEL: dead_mark}))
    backend.start(started)

    real_call = backend._call

    def ours_only(method: str, path: str, **kw: Any) -> Any:
        """Other tests may have leftovers of their own at this moment: look at ours only."""
        answer = real_call(method, path, **kw)
        if path == "/containers/json":
            answer = [c for c in answer if any(n.lstrip("/").startswith(PREFIX) for n in c.get("Names") or [])]
        return answer

    with contextlib.ExitStack() as stack:
        stack.callback(backend.close)
        backend._call = ours_only  # type: ignore[method-assign]
        line = f"container {killed}: created by a run that was killed before it started"
        assert line in backend.prune_leftovers(dry_run=True)
        assert _state(backend, killed) == "created", "--dry-run removes nothing"
        lines = backend.prune_leftovers()
        assert line in lines and not [ln for ln in lines if alive in ln or started in ln], lines
        assert _state(backend, killed) is None
        assert _state(backend, alive) == "created" and _state(backend, started) == "running"
