"""The LXD backend's network parts without LXD: config keys, conversions, raw.lxc, addresses."""

from __future__ import annotations

from typing import Any

import pytest

from cman.backends.base import Feature
from cman.backends.lxd import LxdBackend, convert, endpoint
from cman.backends.lxd import net as lxd_net
from cman.errors import Conflict, InvalidName, InvalidValue
from cman.models import ContainerSpec
from cman.network import NetworkSpec
from cman.network.alloc import allocate


def _spec(**over: Any) -> NetworkSpec:
    fields: dict[str, Any] = {"name": "cmantest-ab12cd", "subnet": "10.203.7.0/24", "gateway": "10.203.7.254",
                              "bridge": "cmantest-ab12cd", "dns": ("192.0.2.53", "198.51.100.53"),
                              "dns_search": ("cman.test",), "icc": False}
    fields.update(over)
    return NetworkSpec(**fields)


def _net_raw(spec: NetworkSpec, used_by: list[str] | None = None) -> dict[str, Any]:
    return {"name": spec.name, "type": "bridge", "managed": True, "status": "Created", "description": "",
            "config": lxd_net.network_config(spec), "used_by": used_by or []}


def test_network_config_has_the_specified_keys() -> None:
    config = lxd_net.network_config(_spec())
    assert config == {
        "ipv4.address": "10.203.7.254/24", "ipv4.nat": "false", "ipv4.dhcp": "false", "ipv6.address": "none",
        "user.cman.managed": "true", "user.cman.dns": "192.0.2.53,198.51.100.53",
        "user.cman.dns_search": "cman.test", "user.cman.icc": "false",
    }
    # empty labels are left out: LXD drops empty keys, and spec_from_labels reads absent as the default
    assert "user.cman.dns" not in lxd_net.network_config(_spec(dns=(), icc=True))


def test_network_round_trip_through_lxd_config() -> None:
    spec = _spec()
    net = lxd_net.to_network(_net_raw(spec, ["/1.0/instances/b", "/1.0/instances/a?project=default",
                                              "/1.0/profiles/default"]), {"host_rules": []})
    assert (net.backend, net.name, net.id, net.bridge) == ("lxd", spec.name, spec.name, spec.name)
    assert (net.subnet, net.gateway, net.dns, net.dns_search, net.icc) == (
        spec.subnet, spec.gateway, spec.dns, spec.dns_search, spec.icc)
    assert net.managed and net.containers == ("a", "b")
    assert net.extra["host_rules"] == [] and net.extra["config"]["ipv4.nat"] == "false"
    assert lxd_net.profile_users(_net_raw(spec, ["/1.0/profiles/default", "/1.0/instances/a"])) == ["default"]


def test_an_lxd_bridge_not_made_by_cman() -> None:
    raw = {"name": "lxdbr0", "type": "bridge", "managed": True,
           "config": {"ipv4.address": "10.201.0.1/24", "user.cman.icc": "false"}, "used_by": []}
    net = lxd_net.to_network(raw)
    assert (net.subnet, net.gateway, net.managed, net.icc, net.dns) == ("10.201.0.0/24", "10.201.0.1", False, True, ())
    assert lxd_net.is_bridge(raw)
    assert not lxd_net.is_bridge({"name": "eth0", "type": "physical", "managed": False})
    assert not lxd_net.is_bridge({"name": "docker0", "type": "bridge", "managed": False})
    assert lxd_net.gateway_and_subnet({"ipv4.address": "none"}) == (None, None)


def test_nic_index_follows_lxds_name_order() -> None:
    devices = {"root": {"type": "disk"}, "eth1": {"type": "nic"}, "eth0": {"type": "nic"}, "x": {"type": "none"}}
    assert lxd_net.nic_index(devices, "eth0") == 0
    assert lxd_net.nic_index(devices, "eth1") == 1
    with pytest.raises(ValueError):
        lxd_net.nic_index(devices, "root")


def test_raw_lxc_block_replaced_and_removed_keeping_other_lines() -> None:
    block = lxd_net.raw_lxc_block("n1", 0, "10.203.7.5", "10.203.7.0/24", "10.203.7.254")
    assert block[1:] == ["lxc.net.0.ipv4.address = 10.203.7.5/24 10.203.7.255",
                         "lxc.net.0.ipv4.gateway = 10.203.7.254"]
    base = "lxc.apparmor.profile = unconfined\n"
    text = lxd_net.with_block(base, block)
    assert text.startswith(base) and text.count("lxc.net.0") == 2
    again = lxd_net.with_block(text, lxd_net.raw_lxc_block("n1", 0, "10.203.7.6", "10.203.7.0/24", None))
    assert "10.203.7.5" not in again and "10.203.7.6/24" in again and "gateway" not in again
    assert lxd_net.without_block(text) == base
    assert lxd_net.without_block("\n".join(block)) == ""


def test_attachment_and_addresses() -> None:
    raw = {
        "name": "c1",
        "config": {"user.cman.network": "n1", "user.cman.ip": "10.203.7.5"},
        "expanded_devices": {"eth0": {"type": "nic", "name": "eth0", "network": "n1"}, "root": {"type": "disk"}},
        "state": {"network": {"eth0": {"addresses": [{"family": "inet", "address": "10.203.7.5"},
                                                     {"family": "inet6", "address": "fe80::1"}]}}},
    }
    assert lxd_net.attachment(raw) == lxd_net.Attachment("n1", "eth0", "eth0", "10.203.7.5")
    assert lxd_net.live_addresses(raw, "eth0") == ["10.203.7.5"]
    assert lxd_net.attachment({"config": {}, "expanded_devices": raw["expanded_devices"]}) is None


def test_holders_count_allocated_and_live_addresses_of_this_network_only() -> None:
    on = {"type": "nic", "name": "eth0", "network": "n1"}
    instances = [
        {"name": "stopped", "config": {"user.cman.network": "n1", "user.cman.ip": "10.203.7.2"},
         "expanded_devices": {"eth0": on}, "state": None},
        {"name": "by-hand", "config": {}, "expanded_devices": {"eth0": on},
         "state": {"network": {"eth0": {"addresses": [{"family": "inet", "address": "10.203.7.9"},
                                                      {"family": "inet", "address": "192.168.5.5"}]}}}},
        {"name": "elsewhere", "config": {"user.cman.network": "n2", "user.cman.ip": "10.203.7.3"},
         "expanded_devices": {"eth0": {"type": "nic", "network": "n2"}}},
    ]
    assert lxd_net.holders(instances, "n1", "10.203.7.0/24") == {"10.203.7.2": "stopped", "10.203.7.9": "by-hand"}


def test_allocate() -> None:
    taken = {"10.203.7.1": "a", "10.203.7.3": "b"}
    assert allocate("n1", "10.203.7.0/24", "10.203.7.2", taken, None) == "10.203.7.4"
    assert allocate("n1", "10.203.7.0/24", "10.203.7.1", {}, None) == "10.203.7.2"
    assert allocate("n1", "10.203.7.0/24", "10.203.7.1", taken, "10.203.7.50") == "10.203.7.50"
    with pytest.raises(Conflict, match="in use by container b"):
        allocate("n1", "10.203.7.0/24", "10.203.7.1", taken, "10.203.7.3")
    with pytest.raises(Conflict, match="no free address"):
        allocate("n1", "10.203.7.0/30", "10.203.7.1", {"10.203.7.2": "x"}, None)


def test_detached_masks_the_nic_and_drops_cmans_keys() -> None:
    raw = {
        "architecture": "x86_64", "ephemeral": False, "stateful": False, "profiles": ["default"], "description": "",
        "config": {"user.cman.network": "n1", "user.cman.ip": "10.203.7.5", "user.cman.managed": "true",
                   "raw.lxc": "lxc.apparmor.profile = unconfined\n" + "\n".join(
                       lxd_net.raw_lxc_block("n1", 0, "10.203.7.5", "10.203.7.0/24", "10.203.7.1")) + "\n",
                   "volatile.eth0.hwaddr": "00:16:3e:00:00:01"},
        "devices": {"eth0": {"type": "nic", "name": "eth0", "network": "n1"}},
        "expanded_devices": {"eth0": {"type": "nic", "name": "eth0", "network": "n1"},
                             "eth1": {"type": "nic", "name": "eth1", "network": "n1"},  # from a profile
                             "root": {"type": "disk", "path": "/"}},
    }
    body = lxd_net.detached(raw, "n1")
    assert body["devices"] == {"eth0": {"type": "none"}, "eth1": {"type": "none"}}
    assert "user.cman.network" not in body["config"] and "user.cman.ip" not in body["config"]
    assert body["config"]["raw.lxc"] == "lxc.apparmor.profile = unconfined\n"
    assert body["config"]["user.cman.managed"] == "true" and body["profiles"] == ["default"]
    only_cman = {**raw, "config": {**raw["config"], "raw.lxc": "\n".join(
        lxd_net.raw_lxc_block("n1", 0, "10.203.7.5", "10.203.7.0/24", None))}}
    assert "raw.lxc" not in lxd_net.detached(only_cman, "n1")["config"]


def test_backend_declares_networks_and_validates_specs() -> None:
    assert Feature.NETWORKS in LxdBackend.capabilities
    assert LxdBackend.default_bridge_name("cmantest-ab12cd") == "cmantest-ab12cd"
    LxdBackend.validate_network_spec(NetworkSpec(name="cmantest-ab12cd"))
    LxdBackend.validate_network_spec(_spec())
    with pytest.raises(InvalidName, match="15"):
        LxdBackend.validate_network_spec(NetworkSpec(name="a-very-long-network-name"))
    with pytest.raises(InvalidName, match="none"):
        LxdBackend.validate_network_spec(NetworkSpec(name="none"))
    with pytest.raises(InvalidValue, match="--bridge"):
        LxdBackend.validate_network_spec(NetworkSpec(name="n1", bridge="br-other"))


def test_ip_without_a_network_is_refused_before_lxd_is_contacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(endpoint.ENV_ENDPOINT, raising=False)
    backend = LxdBackend()
    with pytest.raises(InvalidValue, match="--ip"):
        backend._network_for(ContainerSpec(image="x", ip="10.0.0.5"))
    with pytest.raises(InvalidValue, match="--ip"):
        backend._network_for(ContainerSpec(image="x", network="none", ip="10.0.0.5"))
    assert backend._network_for(ContainerSpec(image="x", network="none")) is None
    assert backend._client is None


def test_a_stopped_container_shows_its_allocated_address() -> None:
    raw = {"name": "c1", "status": "Stopped", "config": {"user.cman.network": "n1", "user.cman.ip": "10.203.7.5"},
           "expanded_devices": {"eth0": {"type": "nic", "name": "eth0", "network": "n1"}}, "state": None}
    assert convert._addresses(raw) == {"n1": "10.203.7.5"}
    running = {**raw, "state": {"network": {"eth0": {"addresses": [
        {"family": "inet", "address": "10.203.7.5", "scope": "global"}]}, "lo": {}}}}
    assert convert._addresses(running) == {"n1": "10.203.7.5"}
    lost = {**raw, "state": {"network": {"eth0": {"addresses": []}, "lo": {}}}}
    assert convert._addresses(lost) == {}, "a running container shows what it has, not what it should have"
