"""The backend-neutral network spec: what to create, what exists, and how they differ.

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

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import Conflict, InvalidName, InvalidValue
from ..models import NO_NETWORK, _Jsonable

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


def check_creatable_name(name: str) -> None:
    """A name ``network create`` may use: not ``none``, which means "no network"."""
    if name == NO_NETWORK:
        raise InvalidName(f"invalid network name {name!r}",
                          hint="`--network none` means loopback only; choose another name")


def check_network_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise InvalidName(f"invalid network name {name!r}", hint=NAME_RULES)
    return name


def check_ifname(name: str, field: str = "--bridge") -> str:
    """The kernel's rules for an interface name (``dev_valid_name``), plus printable ASCII."""
    if not name:
        raise InvalidValue(field, name, "must not be empty")
    if len(name.encode("utf-8", "surrogatepass")) >= IFNAMSIZ:  # argv bytes that are not UTF-8 too
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
        if "%" in text:  # an IPv6 scope ID: free text that would reach resolv.conf and labels
            raise InvalidValue(field, text, "a scoped address (%zone) cannot be a container's DNS server")
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
    import hashlib  # only for long names: ~3 ms of start-up otherwise

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

