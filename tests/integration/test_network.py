"""Networks on real engines, through the real CLI: the same tests for every backend that
declares Feature.NETWORKS (the others skip until they implement it).

Traffic stays between the project's own containers, bridges and the host: containers
ping and arping each other and their gateway, nothing else. DNS servers appear only
as configured values in resolv.conf; no query is sent. Subnets come from
10.203.0.0/16 with a random third octet; names start with the run's ``NET_PREFIX``
(short enough for a bridge name); every network and container is removed in teardown,
also when a test fails. Networks need root (bridges, iptables): without it the tests
follow the engines-required rule of tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from cman.backends.base import Feature
from cman.errors import CmanError
from cman.network import isolation, netfilter, read_host

from ..conftest import NET_PREFIX, Engine, assert_clean_error, lacks, require_root

pytestmark = pytest.mark.engine

DNS = ("192.0.2.53", "198.51.100.53")
"""Documentation addresses: configured values only, never queried."""
SEARCH = ("cman.test", "lab.cman.test")


def free_subnet(avoid: set[str] | frozenset[str] = frozenset()) -> ipaddress.IPv4Network:
    """A /24 of 10.203.0.0/16 with a random third octet, free on this host."""
    taken = [r.net for r in read_host().routes]
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.203.{random.randint(1, 254)}.0/24")
        if str(net) not in avoid and not any(net.overlaps(t) for t in taken):
            return net
    raise AssertionError("no free /24 in 10.203.0.0/16")


@dataclass
class Nets:
    """Networks made by one test, removed (with their containers) in teardown."""

    eng: Engine
    made: list[str] = field(default_factory=list)
    subnets: set[str] = field(default_factory=set)

    def name(self) -> str:
        name = f"{NET_PREFIX}-{secrets.token_hex(2)}"
        self.made.append(name)
        return name

    def subnet(self) -> ipaddress.IPv4Network:
        net = free_subnet(self.subnets)
        self.subnets.add(str(net))
        return net

    def create(self, name: str, *args: str) -> dict[str, object]:
        proc = self.eng.cli("network", "create", name, *args, "--json")
        assert proc.returncode == 0, proc.stderr
        data: dict[str, object] = json.loads(proc.stdout)
        return data

    def cleanup(self) -> None:
        self.eng.cleanup()  # containers first: a network in use cannot go
        for name in self.made:
            with contextlib.suppress(CmanError):
                self.eng.backend.network_remove(name, force=True)
            with contextlib.suppress(CmanError):
                netfilter.remove_rules(name)
        self.made.clear()


@pytest.fixture
def nets(eng: Engine) -> Iterator[Nets]:
    lacks(eng.backend, Feature.NETWORKS)
    require_root("networks (bridges, iptables)")
    made = Nets(eng)
    try:
        yield made
    finally:
        made.cleanup()


def _host(n: ipaddress.IPv4Network, i: int) -> str:
    return str(n.network_address + i)


def _run(eng: Engine, net: str, *extra: str, tag: str = "c") -> str:
    name = eng.name_for(tag)
    proc = eng.cli("run", "-d", "--name", name, "--network", net, *extra, eng.image, "sleep", "600")
    assert proc.returncode == 0, proc.stderr
    return name


def _sh(eng: Engine, name: str, script: str) -> subprocess.CompletedProcess[str]:
    return eng.cli("exec", name, "sh", "-c", script, timeout=60)


def _ping(eng: Engine, name: str, addr: str) -> bool:
    return _sh(eng, name, f"ping -c 1 -W 3 {addr} >/dev/null 2>&1").returncode == 0


def _arping(eng: Engine, name: str, addr: str) -> bool:
    """Layer 2: an ARP request on eth0 answered by ``addr`` (busybox arping exits 1 without a reply)."""
    return _sh(eng, name, f"arping -c 2 -w 3 -I eth0 {addr} >/dev/null 2>&1").returncode == 0


def _resolv(eng: Engine, name: str) -> tuple[list[str], list[str], list[str]]:
    proc = _sh(eng, name, "cat /etc/resolv.conf")
    assert proc.returncode == 0, proc.stderr
    lines = [ln.split() for ln in proc.stdout.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    servers = [ln[1] for ln in lines if ln[0] == "nameserver"]
    search = [d for ln in lines if ln[0] == "search" for d in ln[1:]]
    other = [" ".join(ln) for ln in lines if ln[0] not in ("nameserver", "search")]
    return servers, search, other


def _address(eng: Engine, name: str, net: str) -> str | None:
    proc = eng.cli("inspect", name, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)[0]["addresses"].get(net)


def _iptables_with_tag(name: str) -> list[str]:
    proc = subprocess.run(["iptables", "-w", "10", "-S"], capture_output=True, text=True, check=False)
    return [ln for ln in proc.stdout.splitlines() if netfilter.tag(name) in shlex.split(ln)]


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


# -- create, inspect, idempotency --------------------------------------------------------------------------


def test_create_inspect_idempotent_conflict_rm(nets: Nets) -> None:
    eng, name, subnet = nets.eng, nets.name(), nets.subnet()
    gateway = _host(subnet, 254)
    args = ["--subnet", str(subnet), "--gateway", gateway, "--no-icc",
            *[a for d in DNS for a in ("--dns", d)], *[a for d in SEARCH for a in ("--dns-search", d)]]
    made = nets.create(name, *args)
    assert made["created"] is True
    assert (made["backend"], made["name"], made["subnet"], made["gateway"]) == (eng.name, name, str(subnet), gateway)
    assert (made["dns"], made["dns_search"], made["icc"], made["managed"]) == (list(DNS), list(SEARCH), False, True)
    assert made["bridge"] and len(str(made["bridge"])) <= 15
    assert str(made["bridge"]) in _links(), "the bridge exists on the host"

    again = nets.create(name, *args)
    assert again["created"] is False and again["id"] == made["id"]
    text = eng.cli("network", "create", name, *args)
    assert text.returncode == 0 and "no change" in text.stdout, text

    other = nets.subnet()
    clash = eng.cli("network", "create", name, "--subnet", str(other), "--icc")
    assert_clean_error(clash, 4, "different spec", f"subnet is {subnet}, asked {other}", "icc is off, asked on")

    listed = json.loads(eng.cli("network", "ls", "--json").stdout)
    assert [n["subnet"] for n in listed if n["name"] == name and n["backend"] == eng.name] == [str(subnet)]
    shown = eng.cli("network", "inspect", f"{eng.name}:{name}")
    assert shown.returncode == 0 and f"subnet:     {subnet}" in shown.stdout, shown.stdout

    assert eng.cli("network", "rm", name).returncode == 0
    assert_clean_error(eng.cli("network", "inspect", name), 3, "no such network")
    assert_clean_error(eng.cli("network", "rm", name), 3, "no such network")


def test_subnet_chosen_from_the_pool_when_not_given(nets: Nets) -> None:
    eng, name, pool = nets.eng, nets.name(), nets.subnet()
    proc = eng.cli("network", "create", name, "--json", env={"CMAN_NETWORK_POOL": str(pool)})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["subnet"], data["gateway"], data["icc"]) == (str(pool), _host(pool, 1), True)
    # the same name again, nothing given: no change, whatever cman chose
    assert nets.create(name)["created"] is False


def test_overlapping_subnet_is_refused(nets: Nets) -> None:
    eng, subnet = nets.eng, nets.subnet()
    nets.create(nets.name(), "--subnet", str(subnet))
    inner = ipaddress.IPv4Network(f"{subnet.network_address}/25")
    assert_clean_error(eng.cli("network", "create", nets.name(), "--subnet", str(inner)), 2, "--subnet", "overlaps")


def test_concurrent_creates_make_one_network(nets: Nets) -> None:
    eng, name, subnet = nets.eng, nets.name(), nets.subnet()
    env = {k: v for k, v in os.environ.items() if k != "CMAN_BACKEND"}
    argv = [sys.executable, "-m", "cman", "--backend", eng.name, "network", "create", name,
            "--subnet", str(subnet), "--dns", DNS[0], "--json"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    results = [json.loads(out) for out, _ in outs]
    assert sorted(r["created"] for r in results) == [False, True]
    assert results[0]["id"] == results[1]["id"]
    listed = json.loads(eng.cli("network", "ls", "--json").stdout)
    assert len([n for n in listed if n["name"] == name and n["backend"] == eng.name]) == 1


# -- containers on networks ------------------------------------------------------------------------------------


def test_icc_network_peers_talk_and_get_dns(nets: Nets) -> None:
    eng, name, subnet = nets.eng, nets.name(), nets.subnet()
    gateway = _host(subnet, 1)
    nets.create(name, "--subnet", str(subnet), *[a for d in DNS for a in ("--dns", d)],
                *[a for d in SEARCH for a in ("--dns-search", d)])
    a = _run(eng, name, "--ip", _host(subnet, 10), tag="icc-a")
    b = _run(eng, name, "--ip", _host(subnet, 11), tag="icc-b")
    assert _address(eng, a, name) == _host(subnet, 10)
    assert _address(eng, b, name) == _host(subnet, 11)
    assert _ping(eng, a, _host(subnet, 11)) and _ping(eng, b, _host(subnet, 10))
    assert _arping(eng, a, _host(subnet, 11)), "layer 2 is open on an ICC network"
    assert _ping(eng, a, gateway)
    assert _resolv(eng, a) == (list(DNS), list(SEARCH), [])
    # the container's own --dns / --dns-search replace the network's, field by field
    c = _run(eng, name, "--dns", "203.0.113.53", tag="icc-c")
    assert _resolv(eng, c) == (["203.0.113.53"], list(SEARCH), [])
    d = _run(eng, name, "--dns-search", "other.test", tag="icc-d")
    assert _resolv(eng, d) == (list(DNS), ["other.test"], [])
    shown = json.loads(eng.cli("network", "inspect", name, "--json").stdout)[0]
    assert set(shown["containers"]) == {a, b, c, d}


def test_no_icc_network_isolates_peers_at_ip_and_layer_2(nets: Nets) -> None:
    eng, name, subnet = nets.eng, nets.name(), nets.subnet()
    gateway = _host(subnet, 1)
    made = nets.create(name, "--subnet", str(subnet), "--no-icc")
    a = _run(eng, name, "--ip", _host(subnet, 20), tag="iso-a")
    b = _run(eng, name, "--ip", _host(subnet, 21), tag="iso-b")
    for me, peer in ((a, _host(subnet, 21)), (b, _host(subnet, 20))):
        assert _ping(eng, me, gateway), "the gateway stays reachable"
        assert _arping(eng, me, gateway), "arping works here (so its failure below means isolation)"
        assert not _ping(eng, me, peer), "no IP between peers"
        assert not _arping(eng, me, peer), "no layer 2 between peers"
    ports = isolation.bridge_ports(str(made["bridge"]))
    assert len(ports) == 2 and all(ports.values()), ports
    # a restart makes a new veth: it must be isolated again
    assert eng.cli("restart", "-t", "1", a).returncode == 0
    assert _ping(eng, a, gateway)
    assert not _arping(eng, a, _host(subnet, 21))
    assert all(isolation.bridge_ports(str(made["bridge"])).values())


def test_container_ip_must_fit_the_network(nets: Nets) -> None:
    eng, name, subnet = nets.eng, nets.name(), nets.subnet()
    nets.create(name, "--subnet", str(subnet))
    outside = _host(nets.subnet(), 5)
    assert_clean_error(eng.cli("create", "--network", name, "--ip", outside, eng.image, "true"), 2, "--ip", "outside")
    assert_clean_error(eng.cli("create", "--network", name, "--ip", _host(subnet, 1), eng.image, "true"), 2, "gateway")
    run = eng.cli("run", "--rm", "--network", name, "--ip", outside, eng.image, "true")
    assert_clean_error(run, 125, "--ip")
    assert_clean_error(eng.cli("create", "--network", f"{NET_PREFIX}-{secrets.token_hex(2)}", eng.image, "true"), 3,
                       "no such network")


# -- removal -----------------------------------------------------------------------------------------------


def test_rm_refused_while_in_use_then_forced(nets: Nets) -> None:
    eng, name, subnet = nets.eng, nets.name(), nets.subnet()
    nets.create(name, "--subnet", str(subnet))
    running = _run(eng, name, tag="use-run")
    stopped = eng.name_for("use-new")
    assert eng.cli("create", "--name", stopped, "--network", name, eng.image, "true").returncode == 0
    refused = eng.cli("network", "rm", name)
    assert_clean_error(refused, 4, "in use", running, stopped)
    assert eng.cli("network", "inspect", name).returncode == 0, "still there"
    forced = eng.cli("network", "rm", "-f", name)
    assert forced.returncode == 0, forced.stderr
    assert_clean_error(eng.cli("network", "inspect", name), 3)
    assert eng.state(running) is not None and eng.state(stopped) is not None, "-f keeps the containers"


def test_nothing_left_behind_after_rm(nets: Nets) -> None:
    eng, name, subnet = nets.eng, nets.name(), nets.subnet()
    made = nets.create(name, "--subnet", str(subnet), "--no-icc", "--dns", DNS[0])
    bridge = str(made["bridge"])
    a = _run(eng, name, tag="left-a")
    b = _run(eng, name, tag="left-b")
    veths = set(isolation.bridge_ports(bridge))
    assert len(veths) == 2
    for c in (a, b):
        assert eng.cli("rm", "-f", c).returncode == 0
    assert eng.cli("network", "rm", name).returncode == 0
    assert bridge not in _links()
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True, check=False).returncode != 0
    assert not veths & _links()
    assert _iptables_with_tag(name) == []
    assert not any(r.net.overlaps(subnet) for r in read_host().routes), "no route left for the subnet"


# -- host helpers shared by the backends ---------------------------------------------------------------------


def test_netfilter_rules_and_bridges_on_the_host() -> None:
    require_root("host bridges and iptables rules")
    name, subnet = f"{NET_PREFIX}-{secrets.token_hex(2)}", free_subnet()
    bridge = f"cmt{secrets.token_hex(4)}"
    try:
        netfilter.create_bridge(bridge, _host(subnet, 1), subnet.prefixlen)
        netfilter.create_bridge(bridge, _host(subnet, 1), subnet.prefixlen)  # idempotent
        assert netfilter.link_exists(bridge)
        first = netfilter.ensure_bridge_rules(name, bridge)
        again = netfilter.ensure_bridge_rules(name, bridge)
        assert [str(r) for r in first] == [str(r) for r in again] and len(first) == 1
        assert len(_iptables_with_tag(name)) == 1 and "-j ACCEPT" in _iptables_with_tag(name)[0]
        switched = netfilter.ensure_bridge_rules(name, bridge, icc=False)
        assert len(switched) == 1 and switched[0].args[-1] == "DROP"
        assert netfilter.remove_rules(name) == switched
        assert _iptables_with_tag(name) == []
    finally:
        netfilter.remove_rules(name)
        netfilter.delete_link(bridge)
    assert not netfilter.link_exists(bridge)
    assert not netfilter.delete_link(bridge)
