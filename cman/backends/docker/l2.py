"""No-ICC at layer 2 on a Docker network from the first frame: nftables bridge-family rules.

Docker's ``enable_icc=false`` drops IP between containers, not ARP; cman isolates each
container's bridge port after a start through cman (:mod:`cman.network.isolation`), which
leaves two holes: the moments between the veth joining the bridge and cman isolating it,
and every start done outside cman (``docker start``, a restart policy), which makes a new,
unisolated veth. These rules close both, without knowing any port:

- Docker 20.10 gives a container on a bridge network the MAC ``02:42`` + its IPv4
  address (checked here: 10.203.77.2 got 02:42:0a:cb:4d:02), so every container of the
  network sends from a MAC in one range derived from the subnet;
- in the bridge family's ``forward`` hook (frames from one port to another; frames to and
  from the bridge itself, the gateway, take the input and output hooks) cman drops frames
  from that range, and, for Docker versions that pick MACs otherwise, ARP and IPv4 whose
  sender address is in the subnet.

Checked on this kernel (6.x, nftables 1.0.6): the bridge family takes these matches (only
``meta ibrname``/``ibriport`` are refused), a peer's arping and ping to a container got no
answer while both still reached the gateway. The rules live in cman's own table
``bridge cman_docker``, tagged ``cman:NETWORK`` like cman's iptables rules, are installed
with the network, removed with it, and listed in ``network inspect`` (``host_rules``).
They are not persistent: after a reboot a start through cman puts them back
(:func:`ensure`). Per-port isolation stays as well (a container can send from any MAC).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..._sys import proc
from ...network import netfilter

FAMILY = "bridge"
TABLE = "cman_docker"
CHAIN = "no_icc"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LISTED = re.compile(r'^\s*(?P<rule>.*?)\s+comment "(?P<comment>[^"]*)"\s+# handle (?P<handle>\d+)\s*$')


@dataclass(frozen=True)
class NftRule:
    """One rule of cman's chain, as ``nft -a list chain`` prints it."""

    rule: str
    comment: str
    handle: int

    @property
    def network(self) -> str:
        return self.comment.removeprefix(netfilter.TAG_PREFIX)

    def __str__(self) -> str:
        return f"{FAMILY} {TABLE} {CHAIN}: {self.rule} comment \"{self.comment}\""


def derived_mac(address: ipaddress.IPv4Address) -> str:
    """The MAC Docker 20.10 gives the container with ``address``."""
    return ":".join(f"{b:02x}" for b in (0x02, 0x42, *address.packed))


def rules_for(subnet: str) -> list[str]:
    """The rule bodies for a network on ``subnet``, in the form nft prints them back."""
    net = ipaddress.IPv4Network(subnet)
    macs = f"{derived_mac(net.network_address)}-{derived_mac(net.broadcast_address)}"
    return [f"ether saddr {macs} drop", f"arp saddr ip {net} drop", f"ip saddr {net} drop"]


def _checked(network: str) -> str:
    if not _NAME.fullmatch(network):
        raise ValueError(f"not a network name for an nft comment: {network!r}")
    return netfilter.tag(network)


def listed(network: str | None = None) -> list[NftRule]:
    """cman's rules (for ``network`` when given); [] when nft or the table is missing."""
    import shutil

    if shutil.which("nft") is None:
        return []
    proc = netfilter.run_tool(["nft", "-a", "list", "chain", FAMILY, TABLE, CHAIN], check=False)
    if proc.returncode != 0:
        return []
    return [r for r in parse_listing(proc.stdout) if network is None or r.comment == netfilter.tag(network)]


def parse_listing(text: str) -> list[NftRule]:
    """cman's tagged rules in ``nft -a list chain`` output."""
    out = []
    for line in text.splitlines():
        m = _LISTED.match(line)
        if m and m["comment"].startswith(netfilter.TAG_PREFIX):
            out.append(NftRule(m["rule"], m["comment"], int(m["handle"])))
    return out


def ensure(network: str, subnet: str) -> list[NftRule]:
    """Install the rules of ``network`` unless they are there (one nft transaction);
    returns them. Takes the host-wide network lock (re-entrant)."""
    from ...network.host import host_lock

    tag, want = _checked(network), rules_for(subnet)
    netfilter.need_tool("nft", "nftables")
    with host_lock():
        have = listed(network)
        if sorted(r.rule for r in have) == sorted(want):
            return have
        script = [f"add table {FAMILY} {TABLE}",
                  f"add chain {FAMILY} {TABLE} {CHAIN} {{ type filter hook forward priority 0; policy accept; }}",
                  *(f"delete rule {FAMILY} {TABLE} {CHAIN} handle {r.handle}" for r in have),
                  *(f'add rule {FAMILY} {TABLE} {CHAIN} {rule} comment "{tag}"' for rule in want)]
        _apply(script)
        return listed(network)


def remove(network: str) -> list[NftRule]:
    """Delete the rules of ``network``, and cman's table with the last of them (one nft
    transaction); returns what went. Takes the host-wide network lock (re-entrant)."""
    from ...network.host import host_lock

    tag = _checked(network)
    with host_lock():
        every = listed()
        have = [r for r in every if r.comment == tag]
        if have and len(have) == len(every):
            _apply([f"delete table {FAMILY} {TABLE}"])
        elif have:
            _apply([f"delete rule {FAMILY} {TABLE} {CHAIN} handle {r.handle}" for r in have])
    return have


def _apply(script: list[str]) -> None:
    """One nft transaction from stdin (all of it or nothing)."""
    proc.run(["nft", "-f", "-"], input="\n".join(script) + "\n", timeout=30, backend="host",
             fix="apt-get install nftables")
