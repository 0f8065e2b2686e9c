"""Docker backend pieces that need no engine: name rules, start-failure table, parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from cman._sys.times import parse_time
from cman.backends.docker import DockerBackend
from cman.backends.docker.api import SshTransport, ssh_argv
from cman.backends.docker.containers import classify_start_failure
from cman.backends.docker.convert import container_from_summary
from cman.errors import ExitCode, InvalidName
from cman.models import State


@pytest.mark.parametrize("name", ["web", "a1", "my_app.v2-x"])
def test_valid_names(name: str) -> None:
    DockerBackend.validate_name(name)


@pytest.mark.parametrize("name", ["", "a", "-x", "_x", "has space", "a/b", "x" * 129, "é"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName):
        DockerBackend.validate_name(name)


@pytest.mark.parametrize("ref", ["busybox", "local/busybox:latest", "127.0.0.1:5000/cman/busybox:1.0", "localhost/x"])
def test_valid_image_refs(ref: str) -> None:
    DockerBackend.validate_image_name(ref)


@pytest.mark.parametrize("ref", ["UPPER", "a b", "x:", "-x", "local//x"])
def test_invalid_image_refs(ref: str) -> None:
    with pytest.raises(InvalidName):
        DockerBackend.validate_image_name(ref)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('OCI runtime create failed: exec: "/nope": stat /nope: no such file or directory: unknown', ExitCode.COMMAND_NOT_FOUND),
        ('exec: "nope": executable file not found in $PATH: unknown', ExitCode.COMMAND_NOT_FOUND),
        ('exec: "/etc/passwd": permission denied: unknown', ExitCode.CANNOT_INVOKE),
        ("something else entirely", ExitCode.RUN_FAILED),
    ],
)
def test_start_failure_table(message: str, code: ExitCode) -> None:
    assert classify_start_failure(message) == code


def test_summary_parsing() -> None:
    raw = {
        "Id": "abc123" * 10,
        "Names": ["/web"],
        "Image": "local/busybox",
        "State": "exited",
        "Status": "Exited (0) 1 minute ago",
        "Created": 1700000000,
        "Labels": {"cman.managed": "true", "x": "y"},
        "Command": "sleep 1",
    }
    c = container_from_summary(raw)
    assert (c.name, c.state, c.managed, c.backend) == ("web", State.STOPPED, True, "docker")
    assert c.created is not None and c.created.year == 2023
    assert c.to_dict()["state"] == "stopped"


def test_parse_time_unknown_is_none() -> None:
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time(0) is None
    t = parse_time("2024-05-01T10:20:30.123456789Z")
    assert t is not None and t.microsecond == 123456


def test_ssh_argv() -> None:
    tail = ["docker", "system", "dial-stdio"]
    assert ssh_argv("ssh://me@host.example:2222")[-9:] == ["-l", "me", "-p", "2222", "--", "host.example", *tail]
    argv = ssh_argv("ssh://host")
    assert argv[-5:] == ["--", "host", *tail] and "-l" not in argv and "-p" not in argv
    assert "BatchMode=yes" in argv


@pytest.mark.parametrize("host", ["ssh://", "ssh://h:port", "ssh://h/some/path", "ssh://u:pw@h"])
def test_ssh_argv_rejects(host: str) -> None:
    with pytest.raises(ConnectionError, match="invalid DOCKER_HOST"):
        ssh_argv(host)


def _fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    ssh = tmp_path / "ssh"
    ssh.write_text("#!/bin/sh\n" + script)
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")


def test_ssh_transport_speaks_http_through_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # reads the request head (a GET has no body), answers, exits: what dial-stdio does
    monkeypatch.delenv("DOCKER_API_VERSION", raising=False)
    _fake_ssh(tmp_path, monkeypatch,
              'cr=$(printf "\\r"); read -r first; echo "$* | $first" >> "$(dirname "$0")/got"\n'
              'while IFS= read -r line && [ "$line" != "$cr" ]; do :; done\n'
              "printf 'HTTP/1.0 200 OK\\r\\nApi-Version: 1.41\\r\\nContent-Type: application/json\\r\\n\\r\\n"
              "{\"Version\": \"fake\"}'\n")
    transport = SshTransport("ssh://u@h")
    assert transport.call("GET", "/version", timeout=10) == {"Version": "fake"}
    assert transport.call("GET", "/info", timeout=10) == {"Version": "fake"}
    # one ssh per request; the version negotiated once (GET /_ping), then in every path
    got = [line.split(" | ") for line in (tmp_path / "got").read_text().splitlines()]
    assert all(argv.endswith("-l u -- h docker system dial-stdio") for argv, _ in got)
    assert [line.strip() for _, line in got] == ["GET /_ping HTTP/1.1", "GET /v1.41/version HTTP/1.1",
                                                 "GET /v1.41/info HTTP/1.1"]


def test_ssh_failure_is_a_connection_error_with_what_ssh_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ssh(tmp_path, monkeypatch, 'echo "ssh: connect to host h port 22: Connection refused" >&2\nexit 255\n')
    with pytest.raises(ConnectionError, match="port 22: Connection refused"):
        SshTransport("ssh://h").call("GET", "/version", timeout=10)


def test_ssh_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConnectionError, match="cannot run ssh"):
        SshTransport("ssh://h").call("GET", "/version", timeout=10)
