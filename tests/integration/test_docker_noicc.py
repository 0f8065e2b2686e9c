"""No-ICC on Docker holds at layer 2 from the first frame and across starts outside cman.

A peer on a no-ICC network sends ARP requests (arping) and pings to a container's address
without pause, from before that container exists, while cman starts it, and while Docker
restarts it behind cman's back (`docker restart`, which makes a new, unisolated veth): no
reply is ever seen. The gateway (the bridge itself) answers both. Traffic stays on the
test's own bridge. Needs root and nftables (the network's rules, cman.backends.docker.l2).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from cman.backends.docker import DockerBackend, l2
from cman.errors import CmanError
from cman.network import isolation, read_host

from ..conftest import NET_PREFIX, PREFIX, cli, not_selected, require_root, unavailable

pytestmark = pytest.mark.engine

IMAGE = "local/busybox:latest"
SENDERS = 6
"""Parallel arping loops in the peer: each sends one request, then waits up to 1 s for a reply."""


@pytest.fixture(scope="module", autouse=True)
def docker_up() -> None:
    not_selected("docker")
    status = DockerBackend.probe()
    if not status.reachable:
        unavailable(f"docker: {status.problem}")
    require_root("no-ICC networks (nftables, bridge ports)")
    for tool in ("nft", "docker"):
        if shutil.which(tool) is None:
            unavailable(f"`{tool}` is needed (scripts/setup-engines.sh)")


def _free_subnet() -> ipaddress.IPv4Network:
    taken = [r.net for r in read_host().routes]
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.203.{random.randint(1, 254)}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise AssertionError("no free /24 in 10.203.0.0/16")


@pytest.fixture
def made() -> Iterator[tuple[list[str], list[str]]]:
    containers: list[str] = []
    networks: list[str] = []
    yield containers, networks
    for name in containers:
        cli("rm", "-f", name, backend="docker")
    for name in networks:
        cli("network", "rm", "-f", name, backend="docker")
        with contextlib.suppress(CmanError):
            l2.remove(name)


def _exec(name: str, script: str) -> subprocess.CompletedProcess[str]:
    return cli("exec", name, "sh", "-c", script, backend="docker", timeout=60)


def test_layer2_is_closed_from_the_first_frame_and_after_restarts_outside_cman(
        made: tuple[list[str], list[str]]) -> None:
    containers, networks = made
    net, subnet = f"{NET_PREFIX}-l2{secrets.token_hex(2)}", _free_subnet()
    networks.append(net)
    gateway, peer_ip, target_ip = (str(subnet.network_address + i) for i in (1, 10, 20))
    created = cli("network", "create", net, "--subnet", str(subnet), "--no-icc", "--json", backend="docker")
    assert created.returncode == 0, created.stderr
    shown = json.loads(cli("network", "inspect", net, "--json", backend="docker").stdout)[0]
    assert sorted(r for r in shown["extra"]["host_rules"] if "cman_docker" in r) == sorted(
        f'bridge cman_docker no_icc: {rule} comment "cman:{net}"' for rule in l2.rules_for(str(subnet)))

    peer, target = f"{PREFIX}-l2peer", f"{PREFIX}-l2target"
    containers += [peer, target]
    flood = (f"for i in $(seq {SENDERS}); do (while :; do arping -c 1 -w 1 -I eth0 {target_ip}; done) & done; "
             f"ping -i 0.05 {target_ip} & exec sleep 600")
    run = cli("run", "-d", "--name", peer, "--network", net, "--ip", peer_ip, IMAGE, "sh", "-c",
              f"({flood}) > /tmp/flood.log 2>&1", backend="docker")
    assert run.returncode == 0, run.stderr
    deadline = time.monotonic() + 20
    while "ARPING" not in _exec(peer, "cat /tmp/flood.log").stdout:
        assert time.monotonic() < deadline, "the peer does not send"
        time.sleep(0.1)

    # 1. the first start, through cman, under fire
    run = cli("run", "-d", "--name", target, "--network", net, "--ip", target_ip, IMAGE, "sleep", "600",
              backend="docker")
    assert run.returncode == 0, run.stderr
    time.sleep(2)
    # 2. restarts behind cman's back: each makes a new veth that cman never isolates
    for _ in range(2):
        subprocess.run(["docker", "restart", "-t", "0", target], check=True, capture_output=True, timeout=60)
        time.sleep(2)
    inspected = DockerBackend().inspect(target)
    assert inspected.state == "running"
    ports = isolation.bridge_ports(str(shown["bridge"]))
    assert False in ports.values(), f"the restarted container's port is not isolated per port: {ports}"

    log = _exec(peer, "cat /tmp/flood.log").stdout
    sent = log.count(f"ARPING {target_ip}")
    assert sent > 20, f"the peer sent only {sent} ARP requests"
    replies = [ln for ln in log.splitlines() if target_ip in ln and ("reply" in ln.lower() or "bytes from" in ln)]
    assert replies == [], f"the peer reached {target} at layer 2 or 3: {replies[:5]}"

    # the gateway, the bridge itself, answers both; the target reaches it too
    assert _exec(peer, f"arping -c 2 -w 3 -I eth0 {gateway}").returncode == 0
    assert _exec(peer, f"ping -c 1 -W 3 {gateway}").returncode == 0
    assert _exec(target, f"ping -c 1 -W 3 {gateway}").returncode == 0
    mac = _exec(target, "cat /sys/class/net/eth0/address").stdout.strip()
    assert mac == l2.derived_mac(ipaddress.IPv4Address(target_ip)), "Docker's MAC rule changed: see l2.py"

    # the rules go with the network
    cli("rm", "-f", peer, target, backend="docker")
    assert cli("network", "rm", net, backend="docker").returncode == 0
    assert l2.listed(net) == []
