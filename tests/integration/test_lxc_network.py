"""Networks of the raw LXC backend against real LXC, beyond the backend-neutral test_network.py.

Address allocation under concurrency (several cman processes at once, addresses must be
distinct and no allocation may leak), no-ICC isolation that does not depend on cman
starting the container, the host side coming back after it vanished (a reboot), and
``network rm -f`` detaching containers without leaving anything behind.

Everything runs in a private LXC path and image store (temporary directories). Traffic
stays between these tests' containers and their bridge: containers ping each other and
their gateway, nothing else. Subnets are /24s of 10.203.0.0/16 with a random third
octet; names are ``cmantest-`` + random; containers, networks, bridges and rules are
removed in teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from cman.backends.lxc import LxcBackend
from cman.backends.lxc import net as lxc_net
from cman.backends.lxc.tools import ENV_IMAGES, ENV_LXC_PATH
from cman.errors import CmanError
from cman.network import isolation, netfilter

from ..conftest import ROOTFS, assert_clean_error, cli, require_root, unavailable
from .lxc_lab import free_subnet

pytestmark = pytest.mark.engine

RUN = f"cmantest-{secrets.token_hex(3)}"


@dataclass
class Lab:
    top: Path
    lxcpath: Path
    env: dict[str, str]
    backend: LxcBackend
    image: str
    networks: dict[str, str] = field(default_factory=dict)
    """Network name -> bridge, for teardown."""
    subnets: set[str] = field(default_factory=set)

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return cli(*args, backend="lxc", env={**self.env, **kw.pop("env", {})}, **kw)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, **self.env}
        env.pop("CMAN_BACKEND", None)
        return subprocess.Popen([sys.executable, "-m", "cman", "--backend", "lxc", *args], env=env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def name(self, tag: str) -> str:
        return f"{RUN}-{tag}-{secrets.token_hex(2)}"

    def network(self, *args: str) -> tuple[str, ipaddress.IPv4Network, str]:
        """A new network: (name, subnet, bridge)."""
        name, subnet = f"cmantest-{secrets.token_hex(3)}", free_subnet(self.subnets)
        proc = self.cli("network", "create", name, "--subnet", str(subnet), *args, "--json")
        assert proc.returncode == 0, proc.stderr
        bridge = str(json.loads(proc.stdout)["bridge"])
        self.networks[name] = bridge
        return name, subnet, bridge

    def address(self, container: str) -> dict[str, str]:
        proc = self.cli("inspect", container, "--json")
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout)[0]["addresses"])

    def record(self, network: str) -> dict[str, Any] | None:
        path = self.lxcpath / lxc_net.RECORDS_DIR / f"{network}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def sh(self, container: str, script: str) -> subprocess.CompletedProcess[str]:
        return self.cli("exec", container, "sh", "-c", script, timeout=60)

    def eth0(self, container: str) -> str | None:
        """The IPv4 address the container really has on eth0 (None: no eth0)."""
        proc = self.sh(container, "ip -4 -o addr show dev eth0")
        if proc.returncode != 0:
            return None
        return proc.stdout.split()[3].split("/")[0]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    status = LxcBackend.probe()
    if not status.reachable:
        unavailable(f"lxc: {status.problem} (fix: {status.fix})")
    require_root("LXC networks (bridges, iptables)")
    if not ROOTFS.is_file():
        unavailable(f"{ROOTFS} missing: run scripts/setup-engines.sh")
    top = Path(tempfile.mkdtemp(prefix=f"{RUN}-"))
    top.chmod(0o711)  # unprivileged containers' root must pass through to its rootfs
    lxcpath = top / "lxc"
    lxcpath.mkdir()
    env = {ENV_LXC_PATH: str(lxcpath), ENV_IMAGES: str(top / "images")}
    with mock.patch.dict(os.environ, env):
        backend = LxcBackend()
    lab = Lab(top, lxcpath, env, backend, f"{RUN}-bb")
    try:
        proc = lab.cli("image", "import", str(ROOTFS), lab.image)
        assert proc.returncode == 0, proc.stderr
        yield lab
    finally:
        for entry in sorted(lxcpath.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                with contextlib.suppress(CmanError):
                    backend.remove(entry.name, force=True)
                subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", entry.name, "-k"], capture_output=True,
                               timeout=60, check=False)
        for name, bridge in lab.networks.items():
            with contextlib.suppress(CmanError):
                backend.network_remove(name, force=True)
            with contextlib.suppress(CmanError):
                netfilter.remove_rules(name, bridge)
            with contextlib.suppress(CmanError):
                netfilter.delete_link(bridge)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def made(lab: Lab) -> Iterator[list[str]]:
    """Containers a test makes; removed after it even when it fails."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(CmanError):
            lab.backend.remove(name, force=True)


def _wait(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    return [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]


# -- allocation ------------------------------------------------------------------------------------


def test_concurrent_processes_never_hand_out_one_address_twice(lab: Lab, made: list[str]) -> None:
    net, subnet, _bridge = lab.network()
    gateway = str(subnet.network_address + 1)
    running = [lab.name(f"r{i}") for i in range(6)]
    created = [lab.name(f"c{i}") for i in range(4)]
    made.extend(running + created)
    procs = [lab.popen("run", "-d", "--name", n, "--network", net, lab.image, "sleep", "600") for n in running]
    procs += [lab.popen("create", "--name", n, "--network", net, lab.image) for n in created]
    results = _wait(procs)
    assert all(rc == 0 for rc, _ in results), results

    addresses = {n: lab.address(n)[net] for n in running + created}
    assert len(set(addresses.values())) == len(addresses), addresses
    hosts = {str(subnet.network_address + i) for i in range(2, 2 + len(addresses))}
    assert set(addresses.values()) == hosts, "the first free hosts after the gateway"
    assert gateway not in addresses.values()
    record = lab.record(net)
    assert record is not None and record["allocations"] == addresses, "the record holds exactly these"
    for n in running:
        assert lab.eth0(n) == addresses[n], "the container really has its address"
    assert lab.sh(running[0], f"ping -c 1 -W 3 {addresses[running[1]]} >/dev/null").returncode == 0

    # removes interleaved with new creates: distinct again, and nothing leaks
    gone, fresh = running[:3] + created[:2], [lab.name(f"n{i}") for i in range(5)]
    made.extend(fresh)
    procs = [lab.popen("rm", "-f", n) for n in gone]
    procs += [lab.popen("run", "-d", "--name", n, "--network", net, lab.image, "sleep", "600") for n in fresh]
    results = _wait(procs)
    assert all(rc == 0 for rc, _ in results), results
    live = [n for n in running + created if n not in gone] + fresh
    now = {n: lab.address(n)[net] for n in live}
    assert len(set(now.values())) == len(now), now
    record = lab.record(net)
    assert record is not None and record["allocations"] == now, "no allocation left for removed containers"
    for n in fresh:
        assert lab.eth0(n) == now[n]
    listed = json.loads(lab.cli("network", "inspect", net, "--json").stdout)[0]
    assert sorted(listed["containers"]) == sorted(live)


def test_one_ip_asked_by_several_processes_goes_to_one(lab: Lab, made: list[str]) -> None:
    net, subnet, _bridge = lab.network()
    wanted = str(subnet.network_address + 77)
    names = [lab.name(f"ip{i}") for i in range(4)]
    made.extend(names)
    results = _wait([lab.popen("create", "--name", n, "--network", net, "--ip", wanted, lab.image) for n in names])
    assert sorted(rc for rc, _ in results) == [0, 4, 4, 4], results
    assert all("in use" in err for rc, err in results if rc == 4)
    winner = next(n for n, (rc, _) in zip(names, results, strict=True) if rc == 0)
    assert lab.address(winner) == {net: wanted}
    losers = [n for n in names if n != winner]
    assert not any((lab.lxcpath / n).exists() for n in losers), "a refused create leaves nothing behind"
    record = lab.record(net)
    assert record is not None and record["allocations"] == {winner: wanted}


def test_addresses_are_reused_and_ephemeral_ones_freed(lab: Lab, made: list[str]) -> None:
    net, subnet, _bridge = lab.network()
    a, b, c = lab.name("a"), lab.name("b"), lab.name("c")
    made += [a, b, c]
    for n in (a, b):
        assert lab.cli("create", "--name", n, "--network", net, lab.image).returncode == 0
    assert lab.address(a) == {net: str(subnet.network_address + 2)}
    assert lab.cli("rm", a).returncode == 0
    assert lab.cli("create", "--name", c, "--network", net, lab.image).returncode == 0
    assert lab.address(c) == {net: str(subnet.network_address + 2)}, "the first free host again"
    # LXC destroys an ephemeral (--rm -d) container by itself: its address is free afterwards
    eph = lab.name("eph")
    made.append(eph)
    assert lab.cli("run", "-d", "--rm", "--name", eph, "--network", net, lab.image, "true").returncode == 0
    deadline = time.monotonic() + 30
    while (lab.lxcpath / eph).exists():
        assert time.monotonic() < deadline, "the ephemeral container did not go"
        time.sleep(0.2)
    shown = json.loads(lab.cli("network", "inspect", net, "--json").stdout)[0]
    assert sorted(shown["containers"]) == sorted([b, c])
    d = lab.name("d")
    made.append(d)
    assert lab.cli("create", "--name", d, "--network", net, lab.image).returncode == 0
    assert lab.address(d) == {net: str(subnet.network_address + 4)}
    record = lab.record(net)
    assert record is not None and eph not in record["allocations"]


# -- isolation and the host side ---------------------------------------------------------------------


def test_no_icc_port_is_isolated_also_when_started_by_hand(lab: Lab, made: list[str]) -> None:
    net, subnet, bridge = lab.network("--no-icc")
    a, b = lab.name("hand-a"), lab.name("hand-b")
    made += [a, b]
    for n in (a, b):
        assert lab.cli("create", "--name", n, "--network", net, lab.image).returncode == 0
        # lxc-start by hand, not cman: LXC's own start hook isolates the port
        subprocess.run(["lxc-start", "-P", str(lab.lxcpath), "-n", n, "-d"], check=True, timeout=60)
        subprocess.run(["lxc-wait", "-P", str(lab.lxcpath), "-n", n, "-s", "RUNNING", "-t", "20"], check=True,
                       timeout=30)
    ports = isolation.bridge_ports(bridge)
    assert len(ports) == 2 and all(ports.values()), ports
    peer = str(subnet.network_address + 3)
    assert lab.sh(a, f"ping -c 1 -W 3 {subnet.network_address + 1} >/dev/null").returncode == 0
    assert lab.sh(a, f"arping -c 2 -w 3 -I eth0 {peer} >/dev/null").returncode != 0


def test_bridge_and_rules_come_back_when_a_container_starts(lab: Lab, made: list[str]) -> None:
    net, subnet, bridge = lab.network()
    name = lab.name("reboot")
    made.append(name)
    assert lab.cli("create", "--name", name, "--network", net, lab.image).returncode == 0
    # what a reboot leaves: the records, but no bridge and no rule
    netfilter.remove_rules(net, bridge)
    netfilter.delete_link(bridge)
    assert lab.cli("start", name).returncode == 0
    assert netfilter.link_exists(bridge)
    assert [r.args[-1] for r in netfilter.list_rules(net, bridge)] == ["ACCEPT"]
    assert lab.sh(name, f"ping -c 1 -W 3 {subnet.network_address + 1} >/dev/null").returncode == 0
    mac = lab.sh(name, "cat /sys/class/net/eth0/address").stdout.strip()
    assert mac.startswith("00:16:3e:")
    assert lab.cli("restart", "-t", "1", name).returncode == 0
    assert lab.sh(name, "cat /sys/class/net/eth0/address").stdout.strip() == mac, "a restart keeps the MAC"


def test_force_rm_detaches_containers_and_leaves_nothing(lab: Lab, made: list[str]) -> None:
    net, _subnet, bridge = lab.network("--no-icc")
    up, idle = lab.name("det-up"), lab.name("det-idle")
    made += [up, idle]
    assert lab.cli("run", "-d", "--name", up, "--network", net, lab.image, "sleep", "600").returncode == 0
    assert lab.cli("create", "--name", idle, "--network", net, lab.image).returncode == 0
    veths = set(isolation.bridge_ports(bridge))
    assert len(veths) == 1
    assert_clean_error(lab.cli("network", "rm", net), 4, "in use", up, idle)
    assert lab.cli("network", "rm", "-f", net).returncode == 0
    assert lab.record(net) is None
    assert not netfilter.link_exists(bridge) and not veths & set(os.listdir("/sys/class/net"))
    assert netfilter.list_rules(net) == []
    for n in (up, idle):
        config = (lab.lxcpath / n / "config").read_text()
        assert "lxc.net.0.type = empty" in config and "veth" not in config and bridge not in config
        assert not (lab.lxcpath / n / lxc_net.HOOK_NAME).exists()
        assert lab.address(n) == {}
    assert lab.eth0(up) is None, "the running container lost its interface"
    assert lab.cli("restart", "-t", "1", up).returncode == 0, "and starts again, loopback only"
    assert lab.cli("start", idle).returncode == 0
    assert lab.eth0(idle) is None


# -- DNS and options without a network -----------------------------------------------------------------


def test_dns_without_a_network_and_network_none(lab: Lab, made: list[str]) -> None:
    name, none = lab.name("dns"), lab.name("none")
    made += [name, none]
    proc = lab.cli("run", "-d", "--name", name, "--dns", "192.0.2.53", "--dns-search", "cman.test", lab.image,
                   "sleep", "600")
    assert proc.returncode == 0, proc.stderr
    resolv = lab.sh(name, "cat /etc/resolv.conf").stdout.split("\n")
    assert "nameserver 192.0.2.53" in resolv and "search cman.test" in resolv
    assert lab.eth0(name) is None and lab.address(name) == {}
    assert lab.cli("create", "--name", none, "--network", "none", lab.image).returncode == 0
    assert "lxc.net.0.type = empty" in (lab.lxcpath / none / "config").read_text()
    assert_clean_error(lab.cli("create", "--network", "none", "--ip", "10.203.0.5", lab.image), 2, "--ip")
    assert_clean_error(lab.cli("network", "create", "none"), 2, "loopback only")
