"""The backend-neutral network: what to create, what exists, and the checks in between.

A :class:`NetworkSpec` is what the user asks for. Constructing one validates it
(names, CIDR, gateway, DNS) without touching the host or an engine, so an invalid
spec can never reach a backend. :func:`create_network` then checks the spec
against the host (routes, addresses, bridges) and the networks that already exist,
fills in what the user left to cman (subnet, gateway, bridge name), and hands a
*resolved* spec to :meth:`Backend.network_create <cman.backends.base.Backend.network_create>`.
Every backend therefore receives a complete, checked spec and returns a
:class:`Network`, the same fields whatever the engine.

Semantics (the same on every backend):

- ``create`` is idempotent: the same name with a compatible spec is success and no
  change. A field the user left out (subnet, gateway, bridge: ``None``) matches
  whatever exists; dns, dns_search and icc always have a value (default: none,
  none, True) and must match. A difference is a :class:`NetworkSpecConflict`
  that lists every differing field.
- ``icc=False``: containers on the network reach the gateway (the host) but not
  each other, neither by IP nor at layer 2 (bridge port isolation on each
  container's host veth, see :mod:`cman.netfilter`).
- DNS: a container joined to the network gets the network's servers and search
  domains in its resolv.conf, each field replaced by the container's own
  ``--dns`` / ``--dns-search`` when given. No servers configured: the engine's
  default resolver applies.
- Creates and removes of cman networks on one host are serialised by
  :func:`host_lock`, so two concurrent ``cman network create`` of one name make
  one network and both succeed, and two networks never get overlapping subnets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Conflict, EngineUnavailable, InvalidName, InvalidValue, NetworkNotFound
from .models import _Jsonable

if TYPE_CHECKING:
    from .backends.base import Backend

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULES = "network names are 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
IFNAMSIZ = 16
"""The kernel's interface-name buffer: at most 15 characters plus the NUL."""
MAX_DNS = 3
"""resolv.conf's MAXNS: the resolver ignores servers after the third."""
MAX_SEARCH = 6
"""resolv.conf's classic MAXDNSRCH, and at most 256 characters in all."""
DEFAULT_POOL = "10.210.0.0/16"
"""Where cman picks a /24 when ``--subnet`` is not given; override with $CMAN_NETWORK_POOL."""
POOL_ENV = "CMAN_NETWORK_POOL"
POOL_PREFIX = 24
LOCK_ENV = "CMAN_NETWORK_LOCK"
MANAGED_LABELS = ("cman.dns", "cman.dns_search", "cman.icc")
"""Labels (Docker) / config keys (LXD ``user.*``) that record the parts of a spec the engine has no field for."""

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


# -- validation of single values (shared with `cman run --ip/--dns/--dns-search`) -----------------


def check_network_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise InvalidName(f"invalid network name {name!r}", hint=NAME_RULES)
    return name


def check_ifname(name: str, field: str = "--bridge") -> str:
    """The kernel's rules for an interface name (``dev_valid_name``), plus printable ASCII."""
    if not name:
        raise InvalidValue(field, name, "must not be empty")
    if len(name.encode()) >= IFNAMSIZ:
        raise InvalidValue(field, name, f"interface names have at most {IFNAMSIZ - 1} characters")
    if name in (".", ".."):
        raise InvalidValue(field, name, "'.' and '..' are not interface names")
    bad = sorted({c for c in name if c in "/:" or c.isspace() or not c.isprintable() or not c.isascii()})
    if bad:
        raise InvalidValue(field, name, f"must not contain {' '.join(repr(c) for c in bad)}")
    if name.startswith("-"):
        raise InvalidValue(field, name, "must not start with '-'")
    return name


def parse_subnet(text: str, field: str = "--subnet") -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidValue(field, text, "use an IPv4 CIDR such as 10.203.7.0/24") from None
    if net.version != 4 or "/" not in text:
        raise InvalidValue(field, text, "use an IPv4 CIDR such as 10.203.7.0/24")
    assert isinstance(net, ipaddress.IPv4Network)
    if str(net.network_address) != text.split("/", 1)[0]:
        raise InvalidValue(field, text, f"host bits are set; the network is {net}")
    if not 8 <= net.prefixlen <= 30:
        raise InvalidValue(field, text, "the prefix must be between /8 and /30 (room for a gateway and containers)")
    for what, flag in (
        ("a loopback", net.is_loopback),
        ("a link-local", net.is_link_local),
        ("a multicast", net.is_multicast),
        ("a reserved", net.is_reserved),
        ("the 'this network' (0.0.0.0/8)", net.subnet_of(ipaddress.IPv4Network("0.0.0.0/8"))),
    ):
        if flag:
            raise InvalidValue(field, text, f"{what} range cannot be a container network")
    return net


def parse_host_address(text: str, net: ipaddress.IPv4Network | None, field: str) -> ipaddress.IPv4Address:
    """An IPv4 address usable by a host in ``net`` (not its network or broadcast address)."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidValue(field, text, "use an IPv4 address such as 10.203.7.1") from None
    if addr.version != 4:
        raise InvalidValue(field, text, "use an IPv4 address such as 10.203.7.1")
    assert isinstance(addr, ipaddress.IPv4Address)
    if net is not None:
        if addr not in net:
            raise InvalidValue(field, text, f"is outside the subnet {net}")
        if addr in (net.network_address, net.broadcast_address):
            raise InvalidValue(field, text, f"is the network or broadcast address of {net}")
    return addr


def check_dns_servers(servers: Iterable[str], field: str = "--dns") -> tuple[str, ...]:
    out: list[str] = []
    for text in servers:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise InvalidValue(field, text, "a DNS server is an IP address (names cannot be resolved before DNS)") from None
        if addr.is_unspecified or addr.is_multicast:
            raise InvalidValue(field, text, "is not a usable server address")
        canonical = str(addr)
        if canonical in out:
            raise InvalidValue(field, text, "is given twice")
        out.append(canonical)
    if len(out) > MAX_DNS:
        raise InvalidValue(field, " ".join(out), f"at most {MAX_DNS} servers (resolv.conf ignores the rest)")
    return tuple(out)


def check_search_domains(domains: Iterable[str], field: str = "--dns-search") -> tuple[str, ...]:
    out: list[str] = []
    for text in domains:
        name = text[:-1] if text.endswith(".") else text
        if not name or len(name) > 253 or not all(_LABEL.fullmatch(part) for part in name.split(".")):
            raise InvalidValue(
                field, text, "use a domain name: labels of 1-63 letters, digits and '-', separated by dots"
            )
        if text in out:
            raise InvalidValue(field, text, "is given twice")
        out.append(text)
    if len(out) > MAX_SEARCH:
        raise InvalidValue(field, " ".join(out), f"at most {MAX_SEARCH} search domains")
    if len(" ".join(out)) > 256:
        raise InvalidValue(field, " ".join(out), "the search list is limited to 256 characters")
    return tuple(out)


def default_bridge_name(network: str) -> str:
    """``cm-NAME`` when it fits in 15 characters, else ``cm-`` + a prefix + a hash (stable, unique)."""
    candidate = f"cm-{network}"
    if len(candidate) < IFNAMSIZ:
        return candidate
    digest = hashlib.sha256(network.encode()).hexdigest()[:5]
    return f"cm-{network[:6]}-{digest}"


# -- the spec ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkSpec(_Jsonable):
    """What to create. Valid by construction: ``__post_init__`` raises a UsageError naming the field.

    ``subnet``, ``gateway`` and ``bridge`` may be None ("cman chooses"); a spec is
    *resolved* when all three are set (:attr:`resolved`). Backends only ever get
    resolved specs.
    """

    name: str
    subnet: str | None = None
    """IPv4 CIDR, canonical (``10.203.7.0/24``)."""
    gateway: str | None = None
    """The host's address on the bridge; default: the subnet's first host."""
    bridge: str | None = None
    """Host bridge interface name (kernel rules, at most 15 characters)."""
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    icc: bool = True
    """Inter-container communication; False isolates containers from each other (not from the gateway)."""

    def __post_init__(self) -> None:
        check_network_name(self.name)
        net = None
        if self.subnet is not None:
            net = parse_subnet(self.subnet)
            object.__setattr__(self, "subnet", str(net))
        if self.gateway is not None:
            if net is None:
                raise InvalidValue("--gateway", self.gateway, "needs --subnet")
            object.__setattr__(self, "gateway", str(parse_host_address(self.gateway, net, "--gateway")))
        if self.bridge is not None:
            check_ifname(self.bridge)
        object.__setattr__(self, "dns", check_dns_servers(tuple(self.dns)))
        object.__setattr__(self, "dns_search", check_search_domains(tuple(self.dns_search)))
        if not isinstance(self.icc, bool):
            raise InvalidValue("--icc", self.icc, "must be true or false")

    @property
    def resolved(self) -> bool:
        return self.subnet is not None and self.gateway is not None and self.bridge is not None

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The subnet as an object (resolved specs only)."""
        if self.subnet is None:
            raise ValueError(f"network spec {self.name!r} has no subnet yet")
        return ipaddress.IPv4Network(self.subnet)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    def labels(self) -> dict[str, str]:
        """The spec fields an engine has no place for, as string labels (see :func:`spec_from_labels`)."""
        return {
            "cman.dns": ",".join(self.dns),
            "cman.dns_search": ",".join(self.dns_search),
            "cman.icc": "true" if self.icc else "false",
        }


def spec_from_labels(labels: Mapping[str, str]) -> dict[str, Any]:
    """The inverse of :meth:`NetworkSpec.labels`: dns, dns_search and icc (absent labels: defaults)."""
    def split(key: str) -> tuple[str, ...]:
        return tuple(v for v in (labels.get(key) or "").split(",") if v)

    return {
        "dns": split("cman.dns"),
        "dns_search": split("cman.dns_search"),
        "icc": (labels.get("cman.icc") or "true").lower() != "false",
    }


@dataclass(frozen=True)
class Network(_Jsonable):
    """A network as an engine reports it: the same fields whatever the backend."""

    backend: str
    name: str
    id: str
    bridge: str | None
    subnet: str | None
    gateway: str | None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    icc: bool = True
    containers: tuple[str, ...] = ()
    """Names of the containers attached (running or not)."""
    managed: bool = False
    """Made by cman (Docker label ``cman.managed``, LXD key ``user.cman.managed``, LXC record)."""
    created: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Raw engine data, and ``host_rules`` (iptables rules cman installed for it) and
    ``isolated_ports`` (host veths with bridge port isolation) when the backend reports them."""

    @property
    def ref(self) -> str:
        return f"{self.backend}:{self.name}"

    @classmethod
    def from_spec(cls, spec: NetworkSpec, backend: str, id: str, **kw: Any) -> Network:  # noqa: A002
        return cls(backend=backend, name=spec.name, id=id, bridge=spec.bridge, subnet=spec.subnet,
                   gateway=spec.gateway, dns=spec.dns, dns_search=spec.dns_search, icc=spec.icc,
                   managed=True, **kw)


# -- differences --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldDiff:
    field: str
    existing: Any
    requested: Any

    def __str__(self) -> str:
        return f"{self.field} is {_show(self.existing)}, asked {_show(self.requested)}"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]" if value else "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


SPEC_FIELDS = ("subnet", "gateway", "bridge", "dns", "dns_search", "icc")


def spec_diff(existing: NetworkSpec | Network, requested: NetworkSpec) -> list[FieldDiff]:
    """Fields where ``requested`` disagrees with ``existing``; a requested None matches anything."""
    out: list[FieldDiff] = []
    for name in SPEC_FIELDS:
        want = getattr(requested, name)
        have = getattr(existing, name)
        if want is None:
            continue
        same = tuple(have) == want if isinstance(want, tuple) else have == want
        if not same:
            out.append(FieldDiff(name, have, want))
    return out


class NetworkSpecConflict(Conflict):
    """A network of that name exists with another spec."""

    def __init__(self, name: str, backend: str, diff: Sequence[FieldDiff]) -> None:
        super().__init__(
            f"network {name} already exists on {backend} with a different spec: " + "; ".join(map(str, diff)),
            hint=f"remove it first (cman network rm {backend}:{name}) or repeat its settings",
        )
        self.diff = tuple(diff)


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
    from ._sys import proc as _proc

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


def _overlap_error(spec: NetworkSpec, hits: Sequence[HostRoute | Network]) -> InvalidValue:
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
    import time

    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    from .errors import EngineTimeout

                    raise EngineTimeout(f"another cman process held {path} for {timeout:g} s") from None
                time.sleep(0.05)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- resolution and the verbs -------------------------------------------------------------------


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
        raise _overlap_error(out, hits)
    if out.gateway is None:
        out = dataclasses.replace(out, gateway=str(next(out.network.hosts())))
    return out


def find(backend: Backend, name: str) -> Network | None:
    try:
        return backend.network_inspect(name)
    except NetworkNotFound:
        return None


def check_static(backend: Backend, spec: NetworkSpec) -> None:
    """Every check that needs neither an engine nor host state beyond a route read."""
    from .backends.base import Feature

    backend.require(Feature.NETWORKS)
    type(backend).validate_network_spec(spec)
    early = host_conflicts(spec, read_host(), defer_bridges=True)
    if early:
        raise _overlap_error(spec, early)


def create_network(backend: Backend, spec: NetworkSpec, *, others: Iterable[Network] = ()) -> tuple[Network, bool]:
    """Create ``spec`` on ``backend`` unless an identical network exists: (network, created).

    ``others`` are networks of other backends on this host that must not overlap.
    Raises NetworkSpecConflict (same name, other spec), InvalidValue (overlap,
    pool exhausted), Conflict (bridge interface taken), Unsupported.
    """
    check_static(backend, spec)
    with host_lock():
        existing = find(backend, spec.name)
        if existing is not None:
            diff = spec_diff(existing, spec)
            if diff:
                raise NetworkSpecConflict(spec.name, backend.name, diff)
            return existing, False
        host = read_host()
        bridge = spec.bridge or type(backend).default_bridge_name(spec.name)
        if bridge in host.links:
            raise Conflict(
                f"interface {bridge} already exists on this host and belongs to no {backend.name} network {spec.name}",
                hint="choose another --bridge, or remove that interface",
            )
        peers = [n for n in backend.networks() if n.name != spec.name]
        resolved = resolve(spec, bridge=bridge, host=host, others=[*peers, *others])
        type(backend).validate_network_spec(resolved)
        return backend.network_create(resolved), True


def remove_network(backend: Backend, name: str, *, force: bool = False) -> None:
    """Remove a network (InUse while containers are attached, unless ``force``)."""
    from .backends.base import Feature

    backend.require(Feature.NETWORKS)
    with host_lock():
        backend.network_remove(name, force=force)


# -- what a container joined to a network gets --------------------------------------------------


def container_dns(network: Network | None, dns: Sequence[str], dns_search: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The container's own --dns / --dns-search, each falling back to the network's."""
    servers = tuple(dns) or (network.dns if network else ())
    search = tuple(dns_search) or (network.dns_search if network else ())
    return servers, search


def render_resolv_conf(servers: Sequence[str], search: Sequence[str]) -> str:
    lines = ["# written by cman from the network's and the container's DNS settings"]
    lines += [f"nameserver {s}" for s in servers]
    if search:
        lines.append("search " + " ".join(search))
    return "\n".join(lines) + "\n"


def check_container_ip(network: Network, ip: str) -> None:
    """``--ip`` must be a host address of the network's subnet and not its gateway."""
    net = ipaddress.IPv4Network(network.subnet) if network.subnet else None
    addr = parse_host_address(ip, net, "--ip")
    if network.gateway and str(addr) == network.gateway:
        raise InvalidValue("--ip", ip, f"is the gateway of network {network.name}")
