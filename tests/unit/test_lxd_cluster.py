"""LXD clusters without an engine: the records' parsing, --target's rule, the LOCATION column,
and --target refused up front by a backend without Feature.CLUSTER (the real cluster is in
tests/integration/test_lxd_cluster.py)."""

from __future__ import annotations

import pytest

import cman.backends
from cman.backends.base import Feature
from cman.backends.docker import DockerBackend
from cman.backends.lxc import LxcBackend
from cman.backends.lxd import LxdBackend
from cman.backends.lxd.cluster import check_target
from cman.backends.lxd.convert import _container_from_raw, _location, _member_from_raw
from cman.cli import main
from cman.cli.ps import print_containers as _print_containers
from cman.errors import InvalidValue
from cman.models import ClusterMember, Container, State

from .fake_backend import FakeBackend


@pytest.mark.parametrize(("raw", "expected"), [
    ({"location": "m2"}, "m2"),
    ({"location": "none"}, None),  # what a daemon that is no cluster member says
    ({"location": ""}, None),
    ({}, None),
])
def test_location_of_an_instance(raw: dict[str, str], expected: str | None) -> None:
    assert _location(raw) == expected


def test_container_carries_its_location() -> None:
    raw = {"name": "web", "status": "Running", "location": "m3", "config": {"volatile.last_state.power": "RUNNING"}}
    container = _container_from_raw(raw)
    assert container.location == "m3"
    assert container.to_dict()["location"] == "m3"


def test_member_from_lxds_record() -> None:
    raw = {
        "server_name": "m1", "url": "https://10.254.1.11:8443", "database": True, "status": "Online",
        "message": "Fully operational", "roles": ["database-leader", "database"], "architecture": "x86_64",
        "failure_domain": "default", "description": "", "config": {}, "groups": ["default"],
    }
    assert _member_from_raw(raw) == ClusterMember(
        "m1", "https://10.254.1.11:8443", "online", "Fully operational", ("database-leader", "database"),
        "x86_64", "default")
    assert _member_from_raw({"server_name": "m2"}).status == "unknown"


@pytest.mark.parametrize("target", ["m1", "node-2", "host.example", "a_b", "@default", "@gpu-nodes"])
def test_target_accepts_members_and_groups(target: str) -> None:
    assert check_target(target) == target


@pytest.mark.parametrize("target", ["", "@", "m1/../x", "m1?x=1", "-m1", "m 1", "x" * 64, "m1#"])
def test_target_refuses_what_is_no_name(target: str) -> None:
    with pytest.raises(InvalidValue, match="--target"):
        check_target(target)


def test_only_lxd_declares_clusters() -> None:
    assert Feature.CLUSTER in LxdBackend.capabilities
    assert Feature.CLUSTER not in DockerBackend.capabilities
    assert Feature.CLUSTER not in LxcBackend.capabilities


def _container(backend: str, name: str, location: str | None) -> Container:
    return Container(backend, name, name, "box", State.RUNNING, "Running", True, location=location)


def test_ps_shows_location_only_for_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    _print_containers([_container("docker", "a", None), _container("lxd", "b", "m2")], as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "LOCATION"
    assert [line.split()[-1] for line in lines[1:]] == ["-", "m2"]
    _print_containers([_container("docker", "a", None)], as_json=False)
    assert "LOCATION" not in capsys.readouterr().out


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    backend = FakeBackend()
    monkeypatch.setattr(cman.backends, "load", lambda name: backend)
    return backend


@pytest.mark.parametrize(("verb", "code"), [("create", 6), ("run", 125)])
def test_target_without_the_feature_is_refused_before_any_engine_call(
    fake: FakeBackend, capsys: pytest.CaptureFixture[str], verb: str, code: int,
) -> None:
    assert main(["--backend", "docker", verb, "--target", "m1", "img", "true"]) == code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("cman: the docker backend does not support cluster"), err
    assert fake.calls == []


def test_target_reaches_the_spec(fake: FakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeBackend, "capabilities", frozenset({Feature.CLUSTER}))
    assert main(["--backend", "docker", "create", "--target", "m2", "--name", "t", "img", "true"]) == 0
    assert fake.made["t"].target == "m2"
