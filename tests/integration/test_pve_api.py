"""The PVE apply path end to end against the stand-in (tests/pve_standin.py): an HTTPS server on
127.0.0.1 built from PVE's published schema, NOT PVE. No engine is needed and nothing is skipped;
nothing leaves loopback. Every test checks that no secret reached stdout or stderr."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cman.cli import main
from cman.pve import auth
from tests.pve_standin import StandIn, make_certificates

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
TOKEN_ID, TOKEN_SECRET = "root@pam!cman", "5f0c-token-secret-never-shown"
PASSWORD = "root-password-never-shown"
FAST = ["--poll-interval", "0.02", "--task-timeout", "10"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path_factory.mktemp("pve-pki"))


@pytest.fixture
def pve(pki: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    for name in (auth.TOKEN_ENV, auth.PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    server = StandIn(pki[1], pki[2], tokens={TOKEN_ID: TOKEN_SECRET}, passwords={"root@pam": PASSWORD},
                     task_polls=2).start()
    try:
        yield server
    finally:
        server.stop()


def cman(pve_url: str, ca: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["provision", "docker-host", *args, "--backend", "pve", "--node", "pve1", "--ostemplate", TEMPLATE,
                 "--pve-url", pve_url, "--pve-ca", str(ca), *FAST])
    out, err = capsys.readouterr()
    for secret in (TOKEN_SECRET, PASSWORD):
        assert secret not in out and secret not in err
    return code, out, err


def paths(server: StandIn) -> list[tuple[str, str]]:
    return [(r.method, r.path.split("/tasks/")[0] + ("/tasks" if "/tasks/" in r.path else "")) for r in server.requests]


def test_root_ticket_full_flow(pve: StandIn, pki: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(auth.PASSWORD_ENV, PASSWORD)
    code, out, err = cman(pve.url, pki[0], "web1", "--fuse-overlayfs", "--json", capsys=capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["vmid"] == 100 and not result["features_set_on_node"]
    assert [s["name"] for s in result["steps_to_run"]][-1] == "check"
    assert paths(pve) == [("POST", "/access/ticket"), ("GET", "/cluster/nextid"), ("POST", "/nodes/pve1/lxc"),
                          *[("GET", "/nodes/pve1/tasks")] * 3, ("POST", "/nodes/pve1/lxc/100/status/start"),
                          *[("GET", "/nodes/pve1/tasks")] * 3]
    assert all(r.status == 200 for r in pve.requests)
    assert all(r.who == "root@pam" for r in pve.requests[1:])
    assert pve.containers[100]["features"] == "nesting=1,keyctl=1,fuse=1"
    assert pve.containers[100]["unprivileged"] == "1" and 100 in pve.running
    assert "vmid 100 allocated" in err and "CT 100 started" in err


def test_token_cannot_set_keyctl_refused_before_any_request(pve: StandIn, pki: tuple[Path, Path, Path],
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(auth.TOKEN_ENV, f"{TOKEN_ID}={TOKEN_SECRET}")
    code, _, err = cman(pve.url, pki[0], "web1", "--vmid", "150", capsys=capsys)
    assert code == 6
    assert err.count("\n") == 1 and "root@pam" in err and "pct set 150 --features nesting=1,keyctl=1" in err
    assert pve.requests == []


def test_the_standin_applies_the_root_pam_rule(pve: StandIn, pki: tuple[Path, Path, Path]) -> None:
    """Past cman's own refusal: the stand-in answers a token's keyctl as PVE does (403)."""
    from cman.errors import EngineUnavailable
    from cman.pve.api import PveClient

    client = PveClient(pve.url, auth.parse_token(f"{TOKEN_ID}={TOKEN_SECRET}", "test"), verify=str(pki[0]))
    params = {"vmid": "101", "ostemplate": TEMPLATE, "unprivileged": "1", "features": "nesting=1,keyctl=1"}
    with pytest.raises(EngineUnavailable, match=r"changing feature flags \(except nesting\) is only allowed for root@pam"):
        client.create("pve1", params)
    assert [r.status for r in pve.requests] == [403]
    upid = client.create("pve1", {**params, "features": "nesting=1"})  # nesting alone is a token's to set
    assert upid.startswith("UPID:pve1:") and upid.count(":") == 8


def test_the_standin_refuses_what_the_schema_refuses(pve: StandIn, pki: tuple[Path, Path, Path]) -> None:
    from proxmoxer import ResourceException

    from cman.pve.api import PveClient

    client = PveClient(pve.url, auth.parse_token(f"{TOKEN_ID}={TOKEN_SECRET}", "test"), verify=str(pki[0]))
    raw = client._api.nodes("pve1").lxc
    for bad in ({"bogus": "1"}, {"net0": "name=eth0,bridge=vm br"}, {"unprivileged": "True"}, {"vmid": "99"}):
        with pytest.raises(ResourceException) as err:
            raw.post(**{"vmid": "102", "ostemplate": TEMPLATE, **bad})
        assert err.value.status_code == 400 and set(err.value.errors) == {next(iter(bad))}
    assert pve.containers == {}


def test_token_with_node_ssh_creates_with_nesting_then_sets_keyctl_on_the_node(
        pve: StandIn, pki: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "ssh.log"
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                    f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                    "cmd = sys.argv[-1]\n"
                    "print('overlay2' if 'docker info' in cmd else 'cman-docker-host-ok' if 'docker run' in cmd else '')\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(auth.TOKEN_ENV, f"{TOKEN_ID}={TOKEN_SECRET}")
    code, out, err = cman(pve.url, pki[0], "web1", "--vmid", "200", "--node-ssh", "root@pve1",
                          "--registry-mirror", "http://192.168.50.5:5000", capsys=capsys)
    assert code == 0, err
    assert pve.containers[200]["features"] == "nesting=1"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(c[:6] == ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "--", "root@pve1"] for c in calls)
    remote = [c[6] for c in calls]
    assert remote[0] == "pct set 200 --features nesting=1,keyctl=1"
    assert remote[1] == "pct exec 200 -- apt-get update"
    assert any("daemon.json" in r and "192.168.50.5:5000" in r for r in remote)
    assert remote[-1] == "pct exec 200 -- docker run --rm busybox:latest echo cman-docker-host-ok"
    starts = [i for i, r in enumerate(pve.requests) if r.path.endswith("/status/start")]
    assert len(starts) == 1  # started once, after the features were set
    assert out.strip().endswith("check: done")


def test_a_failed_task_is_one_line(pve: StandIn, pki: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    pve.fail_create = f"unable to create CT 100 - volume '{TEMPLATE}' does not exist"
    monkeypatch.setenv(auth.PASSWORD_ENV, PASSWORD)
    code, _, err = cman(pve.url, pki[0], "web1", capsys=capsys)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("cman: pve: creating CT 100 failed on node pve1: unable to create CT 100 - volume")
    assert "Traceback" not in err and not any(r.path.endswith("/status/start") for r in pve.requests)


def test_a_task_that_never_stops_times_out(pve: StandIn, pki: tuple[Path, Path, Path],
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pve.stall = True
    monkeypatch.setenv(auth.PASSWORD_ENV, PASSWORD)
    code = main(["provision", "docker-host", "web1", "--backend", "pve", "--node", "pve1", "--ostemplate", TEMPLATE,
                 "--pve-url", pve.url, "--pve-ca", str(pki[0]), "--poll-interval", "0.02", "--task-timeout", "0.3"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 7 and last.startswith("cman: pve: creating CT 100 did not finish within 0.3 s")


def test_an_existing_vmid_is_a_conflict(pve: StandIn, pki: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(auth.PASSWORD_ENV, PASSWORD)
    assert cman(pve.url, pki[0], "web1", "--vmid", "300", capsys=capsys)[0] == 0
    code, _, err = cman(pve.url, pki[0], "web2", "--vmid", "300", capsys=capsys)
    assert code == 4 and "CT 300 already exists" in err


def test_an_unreachable_url_is_exit_5(pki: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(auth.TOKEN_ENV, f"{TOKEN_ID}={TOKEN_SECRET}")
    code, _, err = cman(f"https://127.0.0.1:{port}", pki[0], "web1", "--node-ssh", "root@pve1", capsys=capsys)
    assert code == 5 and err.startswith(f"cman: pve: cannot reach https://127.0.0.1:{port}") and err.count("\n") == 1


def test_an_unknown_ca_is_exit_5(pve: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    other_ca = make_certificates(tmp_path)[0]
    monkeypatch.setenv(auth.PASSWORD_ENV, PASSWORD)
    code, _, err = cman(pve.url, other_ca, "web1", capsys=capsys)
    assert code == 5 and "TLS verification of 127.0.0.1 failed" in err and "--pve-ca" in err
    assert pve.requests == []  # the handshake failed: no request, no password sent


def test_a_token_file_readable_by_others_is_exit_2(pve: StandIn, pki: tuple[Path, Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "pve-token"
    token.write_text(f"{TOKEN_ID}={TOKEN_SECRET}\n")
    token.chmod(0o644)
    code, _, err = cman(pve.url, pki[0], "web1", "--token-file", str(token), "--node-ssh", "root@pve1", capsys=capsys)
    assert code == 2 and f"chmod 600 {token}" in err and err.count("\n") == 1
    assert pve.requests == []
