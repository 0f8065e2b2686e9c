"""The host's side of cman networks: its routes and links, free subnets, and the network lock.

:func:`resolve` fills in what the user left to cman (a free /24 of the pool, the
gateway, the bridge) and checks the result against the host's routes and
addresses and the networks that exist. :func:`host_lock` serialises network
changes and address allocation of all cman processes on one host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._sys import files
from ..errors import EngineUnavailable, InvalidValue
from .spec import DEFAULT_POOL, LOCK_ENV, POOL_ENV, POOL_PREFIX, Network, NetworkSpec, parse_subnet

# -- the host: routes, addresses, links ---------------------------------------------------------


@dataclass(frozen=True)
class HostRoute:
    net: ipaddress.IPv4Network
    dev: str | None
    source: str
    """"route" or "address"."""


@dataclass(frozen=True)
class HostNet:
    """A snapshot of the host's IPv4 routes and addresses and its interfaces' kinds."""

    routes: tuple[HostRoute, ...]
    links: Mapping[str, str | None]
    """Interface name -> kind ("bridge", "veth", ... or None for a plain device)."""

    def overlaps(self, net: ipaddress.IPv4Network) -> list[HostRoute]:
        return [r for r in self.routes if r.net.overlaps(net)]

    def is_bridge(self, dev: str | None) -> bool:
        return dev is not None and self.links.get(dev) == "bridge"


def _ip_json(*args: str) -> Any:
    from .._sys import proc as _proc

    if shutil.which("ip") is None:
        raise EngineUnavailable("host", "the `ip` command is not installed", "apt-get install iproute2")
    return json.loads(_proc.run(["ip", "-j", *args], timeout=15, backend="host").stdout or "[]")


def read_host() -> HostNet:
    """Routes of the main table (not the default route) and every interface address."""
    routes: list[HostRoute] = []
    for r in _ip_json("-4", "route", "show", "table", "main"):
        dst = r.get("dst")
        if not dst or dst == "default" or r.get("type") in ("multicast", "broadcast"):
            continue
        with contextlib.suppress(ValueError):
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
            if isinstance(net, ipaddress.IPv4Network):
                routes.append(HostRoute(net, r.get("dev"), "route"))
    links: dict[str, str | None] = {}
    for link in _ip_json("-d", "addr", "show"):
        name = str(link.get("ifname"))
        links[name] = (link.get("linkinfo") or {}).get("info_kind")
        for a in link.get("addr_info") or []:
            if a.get("family") != "inet":
                continue
            with contextlib.suppress(ValueError, KeyError):
                net = ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
                routes.append(HostRoute(net, name, "address"))
    return HostNet(tuple(routes), links)


def host_conflicts(spec: NetworkSpec, host: HostNet, *, defer_bridges: bool) -> list[HostRoute]:
    """Host routes/addresses that overlap ``spec.subnet``.

    With ``defer_bridges``, those on a bridge interface are left out: a bridge may be
    this very network's (an idempotent create), which only the engine can tell.
    """
    if spec.subnet is None:
        return []
    found = host.overlaps(spec.network)
    if defer_bridges:
        found = [r for r in found if not host.is_bridge(r.dev)]
    return found


def overlap_error(spec: NetworkSpec, hits: Sequence[HostRoute | Network]) -> InvalidValue:
    first = hits[0]
    if isinstance(first, HostRoute):
        where = f"the host's {first.source} {first.net}" + (f" on {first.dev}" if first.dev else "")
    else:
        where = f"network {first.ref} ({first.subnet})"
    return InvalidValue("--subnet", spec.subnet, f"overlaps {where}; choose a free range")


# -- locking ------------------------------------------------------------------------------------


def lock_path() -> Path:
    """/run/cman/network.lock for root; a per-user path otherwise ($CMAN_NETWORK_LOCK overrides)."""
    if os.environ.get(LOCK_ENV):
        return Path(os.environ[LOCK_ENV])
    if os.geteuid() == 0:
        return Path("/run/cman/network.lock")
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"cman-{os.getuid()}" / "network.lock"


_held = threading.local()


@contextlib.contextmanager
def host_lock(timeout: float = 120.0) -> Iterator[None]:
    """Serialise network changes and address allocation of all cman processes on this host.

    Re-entrant within a thread: a backend's ``network_create`` (called under the lock)
    may take it again, e.g. to allocate addresses. Raises EngineTimeout after ``timeout``.
    """
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    with files.locked(path, timeout=timeout, poll=0.05):
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0


# -- resolution -------------------------------------------------------------------


def pool() -> ipaddress.IPv4Network:
    text = os.environ.get(POOL_ENV) or DEFAULT_POOL
    net = parse_subnet(text, f"${POOL_ENV}")
    if net.prefixlen > POOL_PREFIX:
        raise InvalidValue(f"${POOL_ENV}", text, f"must hold at least one /{POOL_PREFIX}")
    return net


def resolve(spec: NetworkSpec, *, bridge: str, host: HostNet, others: Iterable[Network]) -> NetworkSpec:
    """Fill in subnet (first free /24 of the pool), gateway (first host) and bridge; check overlaps."""
    taken = [n for n in others if n.subnet]
    subnet = spec.subnet
    if subnet is None:
        for candidate in pool().subnets(new_prefix=POOL_PREFIX):
            if not host.overlaps(candidate) and not any(
                candidate.overlaps(ipaddress.IPv4Network(n.subnet or "")) for n in taken
            ):
                subnet = str(candidate)
                break
        else:
            raise InvalidValue("--subnet", None, f"no free /{POOL_PREFIX} left in {pool()}: give --subnet")
    out = dataclasses.replace(spec, subnet=subnet, bridge=bridge)
    hits: list[HostRoute | Network] = [*host.overlaps(out.network)]
    hits += [n for n in taken if out.network.overlaps(ipaddress.IPv4Network(n.subnet or ""))]
    if hits:
        raise overlap_error(out, hits)
    if out.gateway is None:
        out = dataclasses.replace(out, gateway=str(next(out.network.hosts())))
    return out

