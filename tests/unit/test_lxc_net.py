"""The LXC backend's networks without an engine: records, allocation, config, resolv.conf.

No tool runs here: ``_proc.run`` fails the test if anything calls it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from cman._sys import proc as _proc
from cman.backends.base import Feature
from cman.backends.lxc import LxcBackend, config, convert, tools
from cman.backends.lxc import net as lxc_net
from cman.errors import Conflict, EngineError, InvalidName, InvalidValue, NetworkNotFound
from cman.models import ContainerSpec
from cman.network import NetworkSpec, isolation

SPEC = NetworkSpec("cmantest-n", subnet="10.203.9.0/24", gateway="10.203.9.1", bridge="cm-cmantest-n",
                   dns=("192.0.2.53",), dns_search=("cman.test",), icc=False)


@pytest.fixture(autouse=True)
def no_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"a tool ran: {args!r}")

    monkeypatch.setattr(_proc, "run", forbidden)


def _record(subnet: str = "10.203.9.0/24", gateway: str = "10.203.9.1", **allocations: str) -> dict[str, Any]:
    spec = NetworkSpec("cmantest-n", subnet=subnet, gateway=gateway, bridge="cm-cmantest-n")
    record = lxc_net.new_record(spec)
    record["allocations"] = dict(allocations)
    return record


def _everyone(_name: str) -> bool:
    return True


# -- records -----------------------------------------------------------------------------------


def test_record_round_trip_to_a_network(tmp_path: Path) -> None:
    records = lxc_net.Records(str(tmp_path))
    record = lxc_net.new_record(SPEC)
    records.save(record)
    assert (tmp_path / ".cman-networks" / "cmantest-n.json").is_file()
    net = convert.to_network(records.get("cmantest-n"), ["a"])
    assert (net.backend, net.name, net.subnet, net.gateway, net.bridge) == (
        "lxc", "cmantest-n", "10.203.9.0/24", "10.203.9.1", "cm-cmantest-n")
    assert (net.dns, net.dns_search, net.icc, net.managed, net.containers) == (
        ("192.0.2.53",), ("cman.test",), False, True, ("a",))
    assert len(net.id) == 64 and net.created is not None
    assert [r["name"] for r in records.all()] == ["cmantest-n"]
    records.delete("cmantest-n")
    with pytest.raises(NetworkNotFound):
        records.get("cmantest-n")


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", ".hidden", "x" * 65])
def test_record_names_never_become_paths(tmp_path: Path, name: str) -> None:
    with pytest.raises(NetworkNotFound):
        lxc_net.Records(str(tmp_path)).get(name)


def test_a_record_under_another_name_is_not_trusted(tmp_path: Path) -> None:
    records = lxc_net.Records(str(tmp_path))
    records.save(lxc_net.new_record(SPEC))
    os.rename(records.path("cmantest-n"), records.dir / "other.json")
    assert records.find("other") is None and records.all() == []


# -- allocation -------------------------------------------------------------------------------


def test_first_free_host_skips_the_gateway_and_taken_ones() -> None:
    record = _record()
    assert lxc_net.allocate(record, "a", None, _everyone) == "10.203.9.2"
    assert lxc_net.allocate(record, "b", None, _everyone) == "10.203.9.3"
    record = _record(gateway="10.203.9.2", a="10.203.9.1")
    assert lxc_net.allocate(record, "b", None, _everyone) == "10.203.9.3"
    assert record["allocations"] == {"a": "10.203.9.1", "b": "10.203.9.3"}


def test_requested_address_must_be_free() -> None:
    record = _record(a="10.203.9.10")
    assert lxc_net.allocate(record, "b", "10.203.9.11", _everyone) == "10.203.9.11"
    with pytest.raises(Conflict, match="in use by container a"):
        lxc_net.allocate(record, "c", "10.203.9.10", _everyone)
    assert "c" not in record["allocations"]


def test_stale_allocations_are_dropped_and_their_addresses_reused() -> None:
    record = _record(gone="10.203.9.2", here="10.203.9.3")
    assert lxc_net.allocate(record, "new", None, lambda c: c != "gone") == "10.203.9.2"
    assert record["allocations"] == {"here": "10.203.9.3", "new": "10.203.9.2"}


def test_a_full_subnet_is_a_conflict() -> None:
    record = _record(subnet="10.203.9.0/30", gateway="10.203.9.1", a="10.203.9.2")
    with pytest.raises(Conflict, match="no free address"):
        lxc_net.allocate(record, "b", None, _everyone)


def test_release_drops_the_container_and_stale_ones() -> None:
    record = _record(a="10.203.9.2", b="10.203.9.3", gone="10.203.9.4")
    assert lxc_net.release(record, "a", lambda c: c != "gone")
    assert record["allocations"] == {"b": "10.203.9.3"}
    assert not lxc_net.release(record, "a", _everyone), "nothing changed"


# -- container config --------------------------------------------------------------------------


def test_veth_entries_render_as_checked_config(tmp_path: Path) -> None:
    hook = tmp_path / "a b" / lxc_net.HOOK_NAME
    text = config.render_config(lxc_net.veth_entries("n", "cm-n", "10.203.9.2", 24, "10.203.9.1", hook,
                                                   "00:16:3e:00:00:01"))
    lines = text.splitlines()
    assert "lxc.net.0.hwaddr = 00:16:3e:00:00:01" in lines
    for expected in ("lxc.net.0.type = veth", "lxc.net.0.link = cm-n", "lxc.net.0.flags = up",
                     "lxc.net.0.name = eth0", "lxc.net.0.ipv4.address = 10.203.9.2/24",
                     "lxc.net.0.ipv4.gateway = 10.203.9.1"):
        assert expected in lines
    assert f"lxc.net.0.script.up = {tmp_path}/a\\ b/{lxc_net.HOOK_NAME}" in lines
    no_hook = config.render_config(lxc_net.veth_entries("n", "cm-n", "10.203.9.2", 24, None, None))
    assert "script.up" not in no_hook and "gateway" not in no_hook


def test_hwaddr_is_unicast_in_lxcs_prefix() -> None:
    macs = {lxc_net.new_hwaddr() for _ in range(50)}
    assert len(macs) > 45
    assert all(re.fullmatch(r"00:16:3e(:[0-9a-f]{2}){3}", m) for m in macs)


def test_hook_value_escapes_what_sh_would_interpret() -> None:
    assert isolation.hook_value(Path("/var/lib/lxc/c1/hook")) == "/var/lib/lxc/c1/hook"
    assert isolation.hook_value(Path("/x y/$(id);'\"`")) == "/x\\ y/\\$\\(id\\)\\;\\'\\\"\\`"


def test_hook_script_isolates_the_port_it_is_given() -> None:
    assert isolation.HOOK_SCRIPT.startswith("#!/bin/sh\n")
    assert 'exec bridge link set dev "$6" isolated on' in isolation.HOOK_SCRIPT


def test_detach_config_keeps_everything_but_the_network() -> None:
    before = config.render_config([
        ("lxc.include", "/usr/share/lxc/config/common.conf"),
        ("lxc.uts.name", "c1"),
        "",
        *lxc_net.veth_entries("n", "cm-n", "10.203.9.2", 24, "10.203.9.1", Path("/l/c1/hook")),
        "",
        "limits",
        ("lxc.cgroup.memory.limit_in_bytes", "1000"),
    ])
    after = lxc_net.detach_config(before)
    assert "veth" not in after and "cm-n" not in after and "10.203.9" not in after and "script" not in after
    assert after.count("lxc.net.0.type = empty") == 1
    for kept in ("lxc.include = /usr/share/lxc/config/common.conf", "lxc.uts.name = c1", "# limits",
                 "lxc.cgroup.memory.limit_in_bytes = 1000"):
        assert kept in after
    assert lxc_net.detach_config(after) == after, "idempotent"


# -- resolv.conf ---------------------------------------------------------------------------------


def test_resolv_conf_replaces_a_symlink_instead_of_following_it(tmp_path: Path) -> None:
    host_file = tmp_path / "host-resolv.conf"
    host_file.write_text("nameserver 127.0.0.53\n")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "resolv.conf").symlink_to(host_file)
    lxc_net.write_resolv_conf(rootfs, "nameserver 192.0.2.53\n")
    assert host_file.read_text() == "nameserver 127.0.0.53\n", "the host's file is untouched"
    target = rootfs / "etc" / "resolv.conf"
    assert not target.is_symlink() and target.read_text() == "nameserver 192.0.2.53\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert sorted(os.listdir(rootfs / "etc")) == ["resolv.conf"], "no temporary file left"


def test_resolv_conf_refuses_a_symlinked_etc(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "etc").symlink_to(outside)
    with pytest.raises(EngineError, match="not a directory"):
        lxc_net.write_resolv_conf(rootfs, "nameserver 192.0.2.53\n")
    assert os.listdir(outside) == []


def test_resolv_conf_creates_etc_when_missing(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    lxc_net.write_resolv_conf(tmp_path / "rootfs", "search cman.test\n")
    assert (tmp_path / "rootfs" / "etc" / "resolv.conf").read_text() == "search cman.test\n"


# -- the backend's checks before any work ---------------------------------------------------------


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LxcBackend:
    monkeypatch.setenv(tools.ENV_LXC_PATH, str(tmp_path / "lxc"))
    monkeypatch.setenv(tools.ENV_IMAGES, str(tmp_path / "images"))
    monkeypatch.setattr("cman.backends.lxc.connection.shutil.which", lambda name: f"/usr/bin/{name}")
    (tmp_path / "lxc").mkdir()
    return LxcBackend()


def test_networks_are_declared(backend: LxcBackend) -> None:
    assert Feature.NETWORKS in backend.capabilities


def test_none_is_not_a_network_name() -> None:
    with pytest.raises(InvalidName):
        LxcBackend.validate_network_spec(NetworkSpec("none"))


@pytest.mark.parametrize(("kw", "error", "needle"), [
    ({"network": "cmantest-missing"}, NetworkNotFound, "no such network"),
    ({"ip": "10.203.9.5"}, InvalidValue, "needs --network"),
    ({"network": "none", "ip": "10.203.9.5"}, InvalidValue, "needs --network"),
    ({"network": "cmantest-n", "ip": "10.203.8.5"}, InvalidValue, "outside"),
    ({"network": "cmantest-n", "ip": "10.203.9.1"}, InvalidValue, "gateway"),
    ({"dns": ("not-an-ip",)}, InvalidValue, "--dns"),
    ({"dns_search": ("x\nnameserver 6.6.6.6",)}, InvalidValue, "--dns-search"),
])
def test_container_network_options_checked_before_any_work(backend: LxcBackend, kw: dict[str, Any],
                                                            error: type[Exception], needle: str) -> None:
    backend.net_records.save(lxc_net.new_record(SPEC))
    with pytest.raises(error, match=needle):
        backend.create(ContainerSpec(image="img", name="c1", **kw))
    assert not (Path(backend.lxcpath) / "c1").exists()


def test_network_listing_counts_only_live_containers(backend: LxcBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    record = lxc_net.new_record(SPEC)
    record["allocations"] = {"alive": "10.203.9.2", "gone": "10.203.9.3", "moved": "10.203.9.4"}
    backend.net_records.save(record)
    for name, network in (("alive", "cmantest-n"), ("moved", "elsewhere")):
        d = Path(backend.lxcpath) / name
        d.mkdir()
        (d / "config").write_text("lxc.net.0.type = veth\n")
        (d / "cman.json").write_text(json.dumps({"managed": True, "network": network, "ip": "10.203.9.2"}))
    [net] = backend.networks()
    assert net.containers == ("alive",)
