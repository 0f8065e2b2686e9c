"""Docker-only behaviour on the real engine: DOCKER_HOST over TCP, socket permissions,
detached --rm, separate log streams, and the lean start-up path."""

from __future__ import annotations

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

import pytest

from cman.backends.docker import DockerBackend

from ..conftest import PREFIX, assert_clean_error, cli, unavailable

pytestmark = pytest.mark.engine

IMAGE = "local/busybox:latest"


@pytest.fixture(scope="module", autouse=True)
def docker_up() -> None:
    status = DockerBackend.probe()
    if not status.reachable:
        unavailable(f"docker: {status.problem}")
    if "docker" not in os.environ.get("CMAN_TEST_ENGINES", "docker"):
        pytest.skip("docker not selected")


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
