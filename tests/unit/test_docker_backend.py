"""The Docker backend's verbs over a scripted transport: the order of calls and what is sent
(foreground wait before start, AutoRemove, Privileged, no-ICC decided at every start,
leftovers of killed runs)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import IO, Any

import pytest

from cman.backends.docker import DockerBackend, l2
from cman.backends.docker.api import ApiError
from cman.backends.docker.containers import ISOLATE_LABEL
from cman.errors import ContainerNotFound, EngineError
from cman.models import MANAGED_LABEL, RUN_LABEL, ContainerSpec, StdIO
from cman.network import Network, isolation

CID = "c" * 64


def inspected(labels: Mapping[str, str] | None = None, *, pid: int = 0, auto_remove: bool = False) -> dict[str, Any]:
    return {"Id": CID, "Name": "/web", "Config": {"Labels": dict(labels or {}), "Tty": False, "OpenStdin": False},
            "State": {"Status": "running" if pid else "created", "Pid": pid},
            "HostConfig": {"AutoRemove": auto_remove}}


class ScriptedApi:
    """A Transport whose answers are set per (method, path pattern); records every request."""

    endpoint = "unix:///scripted"
    ping_timeout = 30.0

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any], Any]] = []
        self.answers: list[tuple[str, str, Any]] = []

    def on(self, method: str, pattern: str, answer: Any) -> None:
        self.answers.insert(0, (method, pattern, answer))

    def _answer(self, method: str, path: str, params: Mapping[str, Any] | None, body: Any) -> Any:
        self.calls.append((method, path, dict(params or {}), body))
        for m, pattern, answer in self.answers:
            if m == method and re.fullmatch(pattern, path):
                if isinstance(answer, Exception):
                    raise answer
                return answer(path) if callable(answer) else answer
        raise AssertionError(f"unexpected {method} {path}")

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None,
             timeout: float | None = 60.0, kind: type | None = None) -> Any:
        return self._answer(method, path, params, body)

    @contextlib.contextmanager
    def stream(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
               data: IO[bytes] | None = None, content_type: str = "application/json",
               timeout: float | None = None) -> Iterator[io.BytesIO]:
        yield io.BytesIO(json.dumps(self._answer(method, path, params, None)).encode())

    def hijack(self, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None) -> socket.socket:
        self._answer("POST", path, params, body)
        ours, theirs = socket.socketpair()
        theirs.close()  # the container's output ends at once
        return ours

    def api_version(self) -> str:
        return "1.41"

    def close(self) -> None:
        pass

    def requests(self) -> list[str]:
        return [f"{m} {p}" for m, p, _, _ in self.calls]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> ScriptedApi:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    return ScriptedApi()


def backend_on(api: ScriptedApi) -> DockerBackend:
    backend = DockerBackend()
    backend._transport = api
    return backend


def _quiet() -> StdIO:
    return StdIO(None, io.BytesIO(), io.BytesIO())


# -- foreground runs: the wait is registered before the start -------------------------------------


@pytest.mark.parametrize(("auto_remove", "condition"), [(True, "removed"), (False, "next-exit")])
def test_foreground_wait_is_registered_before_start(api: ScriptedApi, auto_remove: bool, condition: str) -> None:
    api.on("GET", f"/containers/{CID}/json", inspected(auto_remove=auto_remove))
    api.on("POST", f"/containers/{CID}/wait", {"StatusCode": 7, "Error": None})
    api.on("POST", f"/containers/{CID}/(attach|start)", None)
    assert backend_on(api).start_attached(CID, _quiet()) == 7
    order = [r for r in api.requests() if not r.startswith("GET")]
    assert order == [f"POST /containers/{CID}/wait", f"POST /containers/{CID}/attach", f"POST /containers/{CID}/start"]
    assert api.calls[1][2] == {"condition": condition}


def test_a_failed_wait_is_an_error_not_exit_code_0(api: ScriptedApi) -> None:
    api.on("GET", f"/containers/{CID}/json", inspected(auto_remove=True))
    api.on("POST", f"/containers/{CID}/wait", {"StatusCode": 0, "Error": {"Message": "removal failed"}})
    api.on("POST", f"/containers/{CID}/(attach|start)", None)
    with pytest.raises(EngineError, match="removal failed"):
        backend_on(api).start_attached(CID, _quiet())


def test_auto_remove_and_privileged_reach_the_host_config(api: ScriptedApi) -> None:
    api.on("POST", "/containers/create", {"Id": CID, "Warnings": []})
    api.on("GET", f"/containers/{CID}/json", inspected())
    backend = backend_on(api)
    backend.create(ContainerSpec(image="local/busybox", auto_remove=True, privileged=True))
    backend.create(ContainerSpec(image="local/busybox"))
    first, second = (body["HostConfig"] for m, p, _, body in api.calls if p == "/containers/create")
    assert first["AutoRemove"] is True and first["Privileged"] is True
    assert "Privileged" not in second and "AutoRemove" not in second  # Docker's default confinement


def test_removal_already_under_way_is_waited_for(api: ScriptedApi) -> None:
    api.on("DELETE", f"/containers/{CID}", ApiError(409, f"removal of container {CID} is already in progress"))
    api.on("POST", f"/containers/{CID}/wait", ApiError(404, f"No such container: {CID}"))
    backend_on(api).remove(CID, force=True)
    assert api.requests()[-1] == f"POST /containers/{CID}/wait"
    assert api.calls[-1][2] == {"condition": "removed"}


def test_removing_a_container_the_daemon_removed_is_container_not_found(api: ScriptedApi) -> None:
    api.on("DELETE", f"/containers/{CID}", ApiError(404, f"No such container: {CID}"))
    with pytest.raises(ContainerNotFound):
        backend_on(api).remove(CID, force=True)


def test_import_returns_the_image_it_made_not_the_name(api: ScriptedApi, tmp_path: Any) -> None:
    """Parallel imports under one name: the name may already be on another import's image."""
    made, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    api.on("POST", "/images/create", {"status": made})
    api.on("GET", "/images/.*/json", lambda path: {"Id": made if made in path else other, "RepoTags": []})
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(b"")
    assert backend_on(api).image_import(tarball, "local/x:1").id == made
    assert api.requests()[-1] == f"GET /images/{made}/json"


# -- no-ICC: decided from the container's labels at every start -------------------------------------


def test_isolation_is_decided_at_every_start_not_remembered(api: ScriptedApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-lived process made `web` without isolation; another process replaced it by a
    `web` on a no-ICC network: a start through the first process must isolate it."""
    net = Network(backend="docker", name="quiet", id="n" * 64, bridge="br-quiet", subnet="10.203.9.0/24",
                  gateway="10.203.9.1", icc=False, managed=True)
    enforced: list[tuple[str, int, list[str]]] = []
    closed: list[tuple[str, str]] = []
    monkeypatch.setattr(isolation, "enforce", lambda _b, ref, pid, ports, stop: enforced.append(
        (ref, pid, [p.bridge for p in ports])) or [])
    monkeypatch.setattr(l2, "ensure", lambda name, subnet: closed.append((name, subnet)) or [])
    api.on("POST", "/containers/create", {"Id": CID})
    api.on("GET", "/containers/(web|c+)/json", inspected())
    api.on("GET", "/networks/quiet", {})
    backend = backend_on(api)
    monkeypatch.setattr(backend, "_network", lambda name, detail=False: net)
    backend.create(ContainerSpec(image="local/busybox", name="web"))

    api.on("GET", "/containers/web/json", lambda _p: inspected({ISOLATE_LABEL: "quiet"}, pid=4242)
           if any(r == "POST /containers/web/start" for r in api.requests()) else inspected({ISOLATE_LABEL: "quiet"}))
    api.on("POST", "/containers/web/start", None)
    backend.start("web")
    assert closed == [("quiet", "10.203.9.0/24")], "layer 2 closed before the start"
    assert enforced == [("web", 4242, ["br-quiet"])], "ports isolated after the start"
    assert api.requests().index("POST /containers/web/start") > api.requests().index("GET /containers/web/json")


def test_a_container_without_the_label_needs_no_isolation(api: ScriptedApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "enforce", lambda *a, **k: pytest.fail("isolated a container that asks for none"))
    api.on("GET", "/containers/web/json", inspected())
    api.on("POST", "/containers/web/start", None)
    backend_on(api).start("web")
    assert api.requests() == ["GET /containers/web/json", "POST /containers/web/start"]


# -- leftovers of killed runs ----------------------------------------------------------------------------


def _starttime(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[19]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_prune_removes_created_containers_of_killed_runs_only(api: ScriptedApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(l2, "listed", lambda network=None: [])
    me = os.getpid()
    listing = [
        {"Id": "1" * 64, "Names": ["/killed"], "Labels": {MANAGED_LABEL: "true", RUN_LABEL: f"{_dead_pid()}:1"}},
        {"Id": "2" * 64, "Names": ["/reused-pid"], "Labels": {MANAGED_LABEL: "true", RUN_LABEL: f"{me}:1"}},
        {"Id": "3" * 64, "Names": ["/alive"], "Labels": {MANAGED_LABEL: "true", RUN_LABEL: f"{me}:{_starttime(me)}"}},
        {"Id": "4" * 64, "Names": ["/created-by-create"], "Labels": {MANAGED_LABEL: "true"}},
        {"Id": "5" * 64, "Names": ["/odd-label"], "Labels": {MANAGED_LABEL: "true", RUN_LABEL: "x:y"}},
    ]
    api.on("GET", "/containers/json", listing)
    api.on("DELETE", "/containers/[0-9]+", None)
    backend = backend_on(api)

    lines = backend.prune_leftovers(dry_run=True)
    assert lines == ["container killed: created by a run that was killed before it started",
                     "container reused-pid: created by a run that was killed before it started"]
    assert not [r for r in api.requests() if r.startswith("DELETE")], "--dry-run removes nothing"
    query = api.calls[0][2]["filters"]
    assert query == {"label": [f"{MANAGED_LABEL}=true"], "status": ["created"]}

    assert backend.prune_leftovers() == lines
    assert [r for r in api.requests() if r.startswith("DELETE")] == [f"DELETE /containers/{'1' * 64}",
                                                                      f"DELETE /containers/{'2' * 64}"]


def test_prune_removes_rules_whose_network_is_gone(api: ScriptedApi, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = [l2.NftRule(r, "cman:gone", 1) for r in l2.rules_for("10.203.1.0/24")]
    rules += [l2.NftRule(r, "cman:here", 2) for r in l2.rules_for("10.203.2.0/24")]
    removed: list[str] = []
    monkeypatch.setattr(l2, "listed", lambda network=None: rules)
    monkeypatch.setattr(l2, "remove", lambda network: removed.append(network) or [])
    api.on("GET", "/containers/json", [])
    api.on("GET", "/networks", [{"Name": "here"}])
    monkeypatch.setattr("shutil.which", lambda tool: f"/usr/sbin/{tool}")
    lines = backend_on(api).prune_leftovers()
    assert lines == ["nft-rules cman:gone: their network is gone (table bridge cman_docker)"] and removed == ["gone"]


# -- the layer-2 rules --------------------------------------------------------------------------------------


def test_layer2_rules_cover_the_derived_mac_range_and_the_subnet() -> None:
    import ipaddress

    assert l2.derived_mac(ipaddress.IPv4Address("10.203.77.2")) == "02:42:0a:cb:4d:02"  # seen on Docker 20.10
    assert l2.rules_for("10.203.77.0/24") == ["ether saddr 02:42:0a:cb:4d:00-02:42:0a:cb:4d:ff drop",
                                              "arp saddr ip 10.203.77.0/24 drop", "ip saddr 10.203.77.0/24 drop"]
    assert l2.rules_for("172.30.0.0/16")[0] == "ether saddr 02:42:ac:1e:00:00-02:42:ac:1e:ff:ff drop"


def test_layer2_rule_listing_is_parsed_from_nft() -> None:
    text = ('table bridge cman_docker { # handle 9\n\tchain no_icc { # handle 1\n'
            '\t\ttype filter hook forward priority filter; policy accept;\n'
            '\t\tether saddr 02:42:0a:cb:4d:00-02:42:0a:cb:4d:ff drop comment "cman:web" # handle 2\n'
            '\t\tip saddr 10.0.0.0/8 drop # handle 3\n\t}\n}\n')
    assert [(r.rule, r.network, r.handle) for r in l2.parse_listing(text)] == [
        ("ether saddr 02:42:0a:cb:4d:00-02:42:0a:cb:4d:ff drop", "web", 2)]
