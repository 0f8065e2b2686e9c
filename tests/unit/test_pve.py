"""cman.pve without a server: the generated .conf and pct lines, the schema checks, credentials,
and that a bad value is refused before any request."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cman.cli import main
from cman.errors import UsageError
from cman.pve import auth, plan, provision, schema

DATA = Path(__file__).resolve().parents[1] / "data" / "pve"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
BASE = ["provision", "docker-host"]
PVE = ["--backend", "pve", "--node", "pve1", "--ostemplate", TEMPLATE]

CASES = {
    "default-dhcp": ["web1", "--vmid", "120"],
    "static-ip": ["web2", "--vmid", "121", "--bridge", "vmbr1", "--ip", "192.168.50.21/24", "--gw", "192.168.50.1",
                  "--nameserver", "192.168.50.1", "--nameserver", "1.1.1.1", "--storage", "local-zfs:32",
                  "--memory", "4096", "--cores", "4"],
    "privileged-fuse": ["web3", "--vmid", "122", "--privileged", "--fuse-overlayfs",
                        "--registry-mirror", "http://192.168.50.5:5000"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dry_run_matches_the_expected_files(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, *CASES[case], *PVE, "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["conf"] == (DATA / f"{case}.conf").read_text()
    steps = "".join(s["display"] + "\n" for s in out["steps"])
    assert out["pct_create_display"] + "\n" + steps == (DATA / f"{case}.pct").read_text()
    assert out["conf_path"] == f"/etc/pve/lxc/{out['vmid']}.conf"


def test_dry_run_text_and_the_nextid_placeholder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "web1", *PVE, "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"# /etc/pve/lxc/{plan.NEXTID}.conf\n")
    assert f"pct create {plan.NEXTID} {TEMPLATE} --hostname web1" in captured.out
    assert "GET /cluster/nextid" in captured.err


class _NoClient:
    made = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).made += 1
        raise AssertionError("a request was about to be made")


@pytest.mark.parametrize(("args", "field"), [
    (["web1", "--vmid", "99"], "vmid"),
    (["web1", "--vmid", "1000000000"], "vmid"),
    (["web_1"], "hostname"),
    (["a" * 64 + ".example"], "hostname"),
    (["web1", "--bridge", "vmbr0,firewall=1"], "net0"),
    (["web1", "--bridge", "vm br0"], "net0"),
    (["web1", "--ip", "10.0.0.5/40"], "net0"),
    (["web1", "--ip", "10.0.0.5/24", "--gw", "10.0.0"], "net0"),
    (["web1", "--nameserver", "1.2.3"], "nameserver"),
    (["web1", "--memory", "8"], "memory"),
])
def test_bad_values_are_refused_before_any_request(args: list[str], field: str, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from cman.pve import api

    monkeypatch.setattr(api, "PveClient", _NoClient)
    monkeypatch.setenv(auth.TOKEN_ENV, "root@pam!cman=not-a-real-secret")
    before = _NoClient.made
    code = main([*BASE, *args, *PVE, "--pve-url", "https://127.0.0.1:9", "--node-ssh", "root@pve1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert _NoClient.made == before
    assert err.startswith(f"cman: invalid {field} ") and err.count("\n") == 1
    assert "not-a-real-secret" not in err


def test_the_node_name_is_checked_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "web1", "--backend", "pve", "--node", "pve 1", "--ostemplate", TEMPLATE, "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("cman: invalid node 'pve 1'")


def test_other_backends_are_unsupported_and_apply_needs_a_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "web1", "--backend", "docker", "--dry-run"]) == 6
    # PVE's options with another backend: refused before anything is looked at
    assert main([*BASE, "web1", "--backend", "lxd", "--dry-run"]) == 2
    assert "--dry-run does not go with --backend lxd" in capsys.readouterr().err
    assert main([*BASE, "web1", "--backend", "pve", "--ssh", "--dry-run"]) == 2
    assert "--ssh does not go with --backend pve" in capsys.readouterr().err
    assert main([*BASE, "web1", *PVE]) == 2
    assert "--pve-url" in capsys.readouterr().err


# -- the schema ------------------------------------------------------------------------------------


def test_the_schema_copy_is_unedited() -> None:
    data = (Path(schema.__file__).parent / schema.SCHEMA_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == schema.SHA256
    assert "pve-docs" in json.loads(data)["source"]


def test_every_named_format_in_the_schema_is_known() -> None:
    def walk(props: dict[str, Any]) -> None:
        for sub in props.values():
            fmt = sub.get("format")
            if isinstance(fmt, dict):
                walk(fmt)
            elif isinstance(fmt, str):
                schema.check_named_format(fmt, "x")  # KeyError for an unknown one
            if "pattern" in sub:
                schema.perl_regex(sub["pattern"])

    for endpoint in schema.load().values():
        walk(endpoint["parameters"]["properties"])


def test_property_strings_as_pve_parses_them() -> None:
    rootfs = schema.properties(plan.CREATE)["rootfs"]["format"]
    assert schema.parse_property_string(rootfs, "local-lvm:8,acl=on") == {"volume": "local-lvm:8", "acl": "1"}
    with pytest.raises(schema.SchemaError, match="mountoptions"):
        schema.parse_property_string(rootfs, "local-lvm:8,mountoptions=noatime;bogus")
    net = schema.properties(plan.CREATE)["net[n]"]["format"]
    with pytest.raises(schema.SchemaError, match="name"):
        schema.parse_property_string(net, "bridge=vmbr0")  # name is required
    with pytest.raises(schema.SchemaError, match="invalid key"):
        schema.parse_property_string(net, "name=eth0,colour=red")
    assert schema.check_request(plan.CREATE, {"node": "pve1", "vmid": "100", "ostemplate": "x", "bogus": "1"}) == {
        "bogus": "property is not defined in schema and the schema does not allow additional properties"}
    assert "ostemplate" in schema.check_request(plan.CREATE, {"node": "pve1", "vmid": "100"})
    assert schema.check_request(plan.CREATE, {"node": "pve1", "vmid": "100", "ostemplate": "x",
                                              "unprivileged": "True"})  # booleans are 0/1 on the wire
    assert schema.wire(True) == "1" and schema.wire(False) == "0"


# -- credentials and the keyctl rule -------------------------------------------------------------


def test_token_parsing_never_repeats_the_text() -> None:
    creds = auth.parse_token("cman@pve!deploy=0b5e-secret", "$X")
    assert (creds.user, creds.token_name, creds.is_token, creds.is_root_ticket) == ("cman@pve", "deploy", True, False)
    assert "0b5e-secret" not in repr(creds)
    with pytest.raises(UsageError) as err:
        auth.parse_token("just-the-secret-value", "$X")
    assert "just-the-secret-value" not in str(err.value)


def test_secret_files_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("root@pam!cman=abc\n")
    os.chmod(path, 0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        auth.resolve(token_file=path, password_file=None, environ={})
    os.chmod(path, 0o600)
    assert auth.resolve(token_file=path, password_file=None, environ={}).token_name == "cman"
    with pytest.raises(UsageError, match="both"):
        auth.resolve(token_file=None, password_file=None, environ={auth.TOKEN_ENV: "a@b!c=d", auth.PASSWORD_ENV: "x"})
    assert auth.resolve(token_file=None, password_file=None, environ={auth.PASSWORD_ENV: "pw"}).is_root_ticket


def test_who_sets_the_features() -> None:
    spec = plan.DockerHostSpec("web1", "pve1", TEMPLATE, fuse_overlayfs=True)
    token = auth.parse_token("root@pam!cman=s", "$X")
    ticket = auth.password_login("root@pam", "pw", "$Y")
    full = (("nesting", "1"), ("keyctl", "1"), ("fuse", "1"))
    assert provision.split_features(spec, ticket) == (full, None)
    assert provision.split_features(spec, token) == ((("nesting", "1"),), full)
    privileged = plan.DockerHostSpec("web1", "pve1", TEMPLATE, privileged=True)
    assert provision.split_features(privileged, token) == ((), (("nesting", "1"), ("keyctl", "1")))
    message = str(provision.refusal(spec, token, full))
    assert "root@pam" in message and "pct set ID --features nesting=1,keyctl=1,fuse=1" in message
    assert "\n" not in message


def test_the_docker_host_profiles_pve_section_decides_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's own docker-host profile (same name, their config folder) overrides the shipped one."""
    from cman.pve import profile as pve_profile

    assert pve_profile.docker_host().feature_items(fuse=False) == (("nesting", "1"), ("keyctl", "1"))
    folder = tmp_path / "cman" / "profiles"
    folder.mkdir(parents=True)
    (folder / "docker-host.toml").write_text('nesting = true\n\n[pve]\nfeatures = "nesting=1"\nunprivileged = 0\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    mine = pve_profile.docker_host()
    assert mine.feature_items(fuse=True) == (("nesting", "1"), ("fuse", "1"))
    assert mine.unprivileged is False
