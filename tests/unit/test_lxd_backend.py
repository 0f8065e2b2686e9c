"""The LXD backend's pure parts: names, conversions, error classification, settings.

No LXD is contacted: the backend's pylxd client is replaced by one that fails the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cman._sys import unixhttp as _http
from cman.backends.lxd import LxdBackend, connection, convert, endpoint
from cman.errors import (
    ContainerNotFound,
    EngineError,
    EngineUnavailable,
    ImageNotFound,
    InvalidName,
    NameInUse,
)
from cman.models import ContainerSpec, State


class _NoClient:
    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"LXD was contacted before validation ({name})")


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> LxdBackend:
    monkeypatch.delenv(endpoint.ENV_ENDPOINT, raising=False)
    b = LxdBackend()
    b._client = _NoClient()
    return b


@pytest.mark.parametrize("name", ["a", "web", "web-1", "A1-b2", "x" * 63])
def test_good_names(name: str) -> None:
    LxdBackend.validate_name(name)


@pytest.mark.parametrize(
    "name", ["", "1abc", "-abc", "abc-", "a_b", "a.b", "has space", "x" * 64, "a/b", "a\nb", "--help", "é"]
)
def test_bad_names(name: str, backend: LxdBackend) -> None:
    with pytest.raises(InvalidName, match="LXD names"):
        LxdBackend.validate_name(name)
    if name:  # an empty --name means "pick one", as with Docker
        with pytest.raises(InvalidName):
            backend.create(ContainerSpec(image="img", name=name))


@pytest.mark.parametrize("ref", ["a/b", "../x", "1abc", "x" * 64, ""])
def test_impossible_refs_are_not_found_without_a_call(ref: str, backend: LxdBackend) -> None:
    with pytest.raises(ContainerNotFound):
        backend.inspect(ref)


def test_cpu_allowance() -> None:
    assert convert.cpu_allowance(0.5) == "50ms/100ms"
    assert convert.cpu_allowance(2) == "200ms/100ms"
    assert convert.cpu_allowance(0.001) == "1ms/100ms"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('Failed creating instance record: Add instance info to the database: This "instances" entry already exists',
         "name-in-use"),
        ("Image alias not found", "image-not-found"),
        ("Instance not found", "container-not-found"),
        ("Failed initializing instance: No root device could be found", "not-initialised"),
        ("Instance is running", "running"),
        ("not authorized", "untrusted"),
        ('Failed creating instance record: Instance is busy running a "create" operation', "name-in-use"),
        ('Instance is busy running a "start" operation', "busy"),
        ("LXD is shutting down", "shutting-down"),
        ("something else entirely", None),
    ],
)
def test_message_table(text: str, kind: str | None) -> None:
    assert connection.classify_message(text) == kind


def test_translate_operation_failures() -> None:
    err = connection._translate(connection.OperationFailed("This entry already exists"), container="web", image=None, action="create")
    assert isinstance(err, NameInUse)
    err = connection._translate(connection.OperationFailed("Image alias not found"), container="web", image="bb", action="create")
    assert isinstance(err, ImageNotFound)
    err = connection._translate(connection.OperationFailed("No root device could be found"), container="w", image=None, action="")
    assert isinstance(err, EngineUnavailable) and "lxd init" in (err.hint or "")
    err = connection._translate(connection.OperationFailed("disk on fire"), container="w", image=None, action="start")
    assert isinstance(err, EngineError) and str(err) == "lxd start: disk on fire"
    err = connection._translate(connection.OperationFailed('Instance is busy running a "create" operation'),
                                container="web", image=None, action="create")
    assert isinstance(err, NameInUse)  # another client is creating that very name
    err = connection._translate(connection.OperationFailed("LXD is shutting down"), container=None, image="bb",
                                action="pull")
    assert isinstance(err, EngineUnavailable) and err.exit_code == 5


def test_transient_only_for_a_restarting_daemon() -> None:
    assert connection._is_transient(ConnectionRefusedError())
    assert not connection._is_transient(FileNotFoundError())
    translated = EngineUnavailable("lxd", "x", "y")
    translated.__cause__ = ConnectionResetError()
    assert connection._is_transient(translated)
    assert not connection._is_transient(ContainerNotFound("x", "lxd"))


def _raw(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "web",
        "status": "Running",
        "status_code": 103,
        "type": "container",
        "created_at": "2024-05-01T10:00:00.123456789Z",
        "ephemeral": False,
        "config": {
            "user.cman.managed": "true",
            "user.cman.command": '["sh", "-c", "echo hi"]',
            "user.cman.image": "cmantest-bb",
            "user.cman.label.team": "blue",
            "environment.FOO": "bar",
            "limits.memory": "67108864",
            "volatile.last_state.power": "RUNNING",
            "volatile.base_image": "ae6d215f88a6446a",
        },
        "expanded_devices": {"eth0": {"type": "nic", "name": "eth0", "network": "lxdbr0"}, "root": {"type": "disk"}},
        "state": {
            "pid": 4242,
            "network": {
                "eth0": {"addresses": [{"family": "inet6", "address": "fe80::1", "scope": "link"},
                                       {"family": "inet", "address": "10.201.0.5", "scope": "global"}]},
                "lo": {"addresses": [{"family": "inet", "address": "127.0.0.1", "scope": "local"}]},
            },
        },
    }
    raw.update(over)
    return raw


def test_container_from_raw() -> None:
    c = convert._container_from_raw(_raw())
    assert (c.backend, c.id, c.name, c.image) == ("lxd", "web", "web", "cmantest-bb")
    assert c.state == State.RUNNING and c.pid == 4242 and c.managed
    assert c.command == ("sh", "-c", "echo hi")
    assert c.labels == {"team": "blue"}
    assert c.addresses == {"lxdbr0": "10.201.0.5"}
    assert c.extra["env"] == {"FOO": "bar"}
    assert c.created is not None and c.created.year == 2024
    assert c.exit_code is None


def test_created_vs_stopped() -> None:
    never = _raw(status="Stopped", state={"pid": 0})
    never["config"] = {k: v for k, v in never["config"].items() if k != "volatile.last_state.power"}
    c = convert._container_from_raw(never)
    assert c.state == State.CREATED and c.status == "Created" and c.pid is None
    stopped = convert._container_from_raw(_raw(status="Stopped", state={"pid": 0}), exit_code=3)
    assert stopped.state == State.STOPPED and stopped.exit_code == 3 and stopped.status == "Exited (3)"


def test_progress_event() -> None:
    e = convert._progress_event("rootfs: 23% (1.20MB/s)")
    assert (e.layer, e.status) == ("rootfs", "Downloading 23% (1.20MB/s)")
    assert convert._progress_event("working").layer is None


def test_remote_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(endpoint.ENV_ENDPOINT, raising=False)
    assert endpoint._Remote.from_env() is None
    monkeypatch.setenv(endpoint.ENV_ENDPOINT, "http://127.0.0.1:8443")
    with pytest.raises(EngineUnavailable, match="https"):
        endpoint._Remote.from_env()
    monkeypatch.setenv(endpoint.ENV_ENDPOINT, "https://127.0.0.1:8443/")
    monkeypatch.delenv(endpoint.ENV_CERT, raising=False)
    with pytest.raises(EngineUnavailable, match=endpoint.ENV_CERT):
        endpoint._Remote.from_env()
    crt, key, ca = tmp_path / "c.crt", tmp_path / "c.key", tmp_path / "server.crt"
    for f in (crt, key, ca):
        f.write_text("x")
    monkeypatch.setenv(endpoint.ENV_CERT, str(crt))
    monkeypatch.setenv(endpoint.ENV_KEY, str(key))
    monkeypatch.setenv(endpoint.ENV_VERIFY, "false")
    r = endpoint._Remote.from_env()
    assert r is not None and (r.endpoint, r.host, r.port, r.verify) == ("https://127.0.0.1:8443", "127.0.0.1", 8443, False)
    monkeypatch.setenv(endpoint.ENV_VERIFY, str(ca))
    r = endpoint._Remote.from_env()
    assert r is not None and r.verify == str(ca)
    monkeypatch.setenv(endpoint.ENV_VERIFY, str(tmp_path / "missing.crt"))
    with pytest.raises(EngineUnavailable, match="not a file"):
        endpoint._Remote.from_env()


def test_probe_without_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(endpoint.ENV_ENDPOINT, raising=False)
    monkeypatch.setenv("LXD_DIR", str(tmp_path / "nolxd"))
    status = LxdBackend.probe()
    assert not status.reachable and not status.running
    assert "lxd --group root > /var/log/lxd.log 2>&1 & lxd waitready" in (status.fix or "")


@pytest.fixture
def fake_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    sock = tmp_path / "unix.socket"
    sock.write_text("")
    monkeypatch.delenv(endpoint.ENV_ENDPOINT, raising=False)
    monkeypatch.setattr(endpoint, "lxd_socket", lambda: str(sock))
    return sock


@pytest.mark.parametrize(
    ("raised", "running", "needle"),
    [
        (PermissionError(13, "Permission denied"), True, "usermod -aG lxd"),
        (ConnectionRefusedError(111, "refused"), False, "lxd --group root"),
    ],
)
def test_probe_socket_problems(
    fake_socket: Path, monkeypatch: pytest.MonkeyPatch, raised: OSError, running: bool, needle: str
) -> None:
    def get_json(*_: Any, **__: Any) -> Any:
        raise raised

    monkeypatch.setattr(_http, "get_json", get_json)
    status = LxdBackend.probe()
    assert status.reachable is False and status.running is running
    assert needle in (status.fix or "")


def test_probe_untrusted_and_uninitialised(fake_socket: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers: dict[str, Any] = {
        "/1.0": {"metadata": {"auth": "untrusted", "environment": {"server_version": "5.0.2"}}},
        "/1.0/profiles/default": {"metadata": {"devices": {}}},
    }
    monkeypatch.setattr(_http, "get_json", lambda _sock, path, *a, **k: answers[path])
    status = LxdBackend.probe()
    assert status.reachable is False and "lxd group" in (status.fix or "")
    answers["/1.0"]["metadata"]["auth"] = "trusted"
    status = LxdBackend.probe()
    assert status.reachable is True and status.version == "5.0.2"
    assert "not initialised" in (status.problem or "") and "lxd init" in (status.fix or "")


@pytest.mark.parametrize("code", [0, 1, 126, 127, 137])
def test_an_exec_operation_gives_the_command_exit_code(code: int) -> None:
    from cman.backends.lxd.exec import exit_status

    assert exit_status("c1", {"metadata": {"return": code}}) == code


@pytest.mark.parametrize("operation", [{"metadata": {"return": -1}}, {"metadata": {}}, {}])
def test_an_exec_operation_without_a_status_is_an_error_not_an_exit_code(operation: dict[str, Any]) -> None:
    """LXD says -1 when its forkexec could not report the command's PID (under load): no caller
    may read that as the command's answer."""
    from cman.backends.lxd.exec import exit_status
    from cman.errors import EngineExecFailed

    with pytest.raises(EngineExecFailed, match="c1"):
        exit_status("c1", operation, "EOF")
