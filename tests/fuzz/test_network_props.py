"""Properties of the network spec (cman.network.spec): subnets, gateways, bridge names, DNS
servers and search domains, and the whole NetworkSpec.

What a network spec accepts ends up in places with strict syntax: resolv.conf lines, a
bridge name (the kernel's IFNAMSIZ), Docker labels and LXD config keys that are read back
(:func:`spec_from_labels`). So beyond "UsageError or a value", the properties read every
accepted value back the way those places do and require the same value.
"""

from __future__ import annotations

import ipaddress
import re

from hypothesis import example, given
from hypothesis import strategies as st

from cman.backends import backend_class
from cman.network import spec as ns

from ._fuzz import FUZZ, Refused, counted, one_line, usage_or, values

octet = st.integers(0, 255)
ipv4 = st.tuples(octet, octet, octet, octet).map(lambda t: ".".join(map(str, t)))
ipv6 = st.ip_addresses(v=6).map(str)
scoped_ipv6 = st.tuples(st.sampled_from(("fe80::1", "fe80::a:b")), values(st.sampled_from(("eth0", "br0", "1")))).map(
    lambda t: f"{t[0]}%{t[1]}"
)
subnet = st.builds(lambda a, p: str(ipaddress.IPv4Network(f"{a}/{p}", strict=False)), ipv4, st.integers(0, 32))
any_prefix = st.builds(lambda a, p: f"{a}/{p}", ipv4, st.one_of(st.integers(0, 40).map(str), st.sampled_from(
    ("024", "+24", " 24", "24 ", "255.255.255.0", "0.0.0.255", ""))))
domain_label = st.from_regex(r"\A[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
domain = st.lists(domain_label, min_size=1, max_size=4).map(".".join)
net_name = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
ifname = st.from_regex(r"\A[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}\Z")

NET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DOMAIN = re.compile(r"(?=.{1,253}\.?$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?")
IFNAMSIZ = 16


def read_resolv_conf(text: str) -> tuple[list[str], list[str]]:
    """resolv.conf as glibc reads it: one keyword and its fields per line, split on blanks."""
    servers: list[str] = []
    search: list[str] = []
    for line in text.split("\n"):
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            servers.append(fields[1])
        elif fields[0] == "search":
            search = fields[1:]
    return servers, search


def kernel_ifname_ok(name: str) -> bool:
    """The kernel's dev_valid_name(), on the bytes the name becomes."""
    raw = name.encode("utf-8", "surrogateescape")
    return (0 < len(raw) < IFNAMSIZ and name not in (".", "..")
            and not any(c in raw for c in b"/: \t\n\v\f\r"))


# -- single values -------------------------------------------------------------------------------------


@FUZZ
@given(values(st.one_of(subnet, any_prefix)))
@counted
def test_parse_subnet(text: str) -> None:
    out = usage_or(lambda: ns.parse_subnet(text))
    if isinstance(out, Refused):
        return
    assert isinstance(out, ipaddress.IPv4Network)
    assert 8 <= out.prefixlen <= 30
    assert not (out.is_loopback or out.is_link_local or out.is_multicast or out.is_reserved)
    assert not out.subnet_of(ipaddress.IPv4Network("0.0.0.0/8"))
    assert ns.parse_subnet(str(out)) == out, "the canonical form reads back"


@FUZZ
@given(values(ipv4), st.none() | subnet.filter(lambda s: int(s.rpartition("/")[2]) <= 30))
@counted
def test_parse_host_address(text: str, net_text: str | None) -> None:
    net = ipaddress.IPv4Network(net_text) if net_text else None
    out = usage_or(lambda: ns.parse_host_address(text, net, "--ip"))
    if isinstance(out, Refused):
        return
    assert isinstance(out, ipaddress.IPv4Address)
    if net is not None:
        assert out in net and out not in (net.network_address, net.broadcast_address)


@example(["fe80::1%x\nnameserver 6.6.6.6"])
@example(["1::% "])
@example(["fe80::1%a,b"])
@FUZZ
@given(st.lists(values(st.one_of(ipv4, ipv6, scoped_ipv6)), max_size=4))
@counted
def test_check_dns_servers(servers: list[str]) -> None:
    out = usage_or(lambda: ns.check_dns_servers(servers))
    if isinstance(out, Refused):
        return
    assert len(out) == len(servers) <= ns.MAX_DNS and len(set(out)) == len(out)
    for server in out:
        assert one_line(server) and not any(c.isspace() for c in server), \
            f"DNS server {server!r} would break its resolv.conf line"
        assert "," not in server, f"DNS server {server!r} breaks the comma-separated label"
        assert str(ipaddress.ip_address(server)) == server, "canonical"
    assert read_resolv_conf(ns.render_resolv_conf(out, ())) == (list(out), [])


@FUZZ
@given(st.lists(values(domain), max_size=7))
@counted
def test_check_search_domains(domains: list[str]) -> None:
    out = usage_or(lambda: ns.check_search_domains(domains))
    if isinstance(out, Refused):
        return
    assert len(out) <= ns.MAX_SEARCH and len(" ".join(out)) <= 256
    for d in out:
        assert DOMAIN.fullmatch(d) and d.isascii(), f"search domain {d!r}"
    assert read_resolv_conf(ns.render_resolv_conf((), out)) == ([], list(out))


@example("\udcff")
@FUZZ
@given(values(ifname))
@counted
def test_check_ifname(name: str) -> None:
    out = usage_or(lambda: ns.check_ifname(name))
    if isinstance(out, Refused):
        return
    assert kernel_ifname_ok(out), f"the kernel refuses the interface name {out!r}"
    assert out.isascii() and out.isprintable() and not out.startswith("-")


@FUZZ
@given(values(net_name))
@counted
def test_network_names_and_their_bridge(name: str) -> None:
    out = usage_or(lambda: ns.check_network_name(name))
    if isinstance(out, Refused):
        assert not NET_NAME.fullmatch(name), f"the valid network name {name!r} is refused"
        return
    assert NET_NAME.fullmatch(out), f"network name {out!r}"
    bridge = ns.default_bridge_name(out)
    assert ns.check_ifname(bridge) == bridge, f"the default bridge of {out!r} is {bridge!r}"


# -- the whole spec ------------------------------------------------------------------------------------------

specs = st.fixed_dictionaries({
    "name": values(net_name),
    "subnet": st.none() | values(subnet),
    "gateway": st.none() | values(ipv4),
    "bridge": st.none() | values(ifname),
    "dns": st.lists(values(st.one_of(ipv4, scoped_ipv6)), max_size=4).map(tuple),
    "dns_search": st.lists(values(domain), max_size=3).map(tuple),
    "icc": st.booleans(),
})


@FUZZ
@given(specs)
@counted
def test_network_spec(fields: dict[str, object]) -> None:
    out = usage_or(lambda: ns.NetworkSpec(**fields))  # type: ignore[arg-type]
    if isinstance(out, Refused):
        return
    again = ns.NetworkSpec(name=out.name, subnet=out.subnet, gateway=out.gateway, bridge=out.bridge,
                           dns=out.dns, dns_search=out.dns_search, icc=out.icc)
    assert again == out, "a spec is canonical: building it again changes nothing"
    for value in (out.subnet, out.gateway, out.bridge, *out.dns, *out.dns_search):
        assert value is None or (one_line(value) and not value.startswith("-")), value
    if out.gateway is not None:
        assert ipaddress.IPv4Address(out.gateway) in out.network
    assert ns.spec_from_labels(out.labels()) == {"dns": out.dns, "dns_search": out.dns_search, "icc": out.icc}, \
        "what is stored in labels reads back as the same spec"
    assert ns.spec_diff(out, again) == []


def _check_backend_spec(engine: str, fields: dict[str, object]) -> None:
    spec = usage_or(lambda: ns.NetworkSpec(**fields))  # type: ignore[arg-type]
    if isinstance(spec, Refused):
        return
    usage_or(lambda: backend_class(engine).validate_network_spec(spec))


@FUZZ
@given(specs)
@counted
def test_network_spec_docker(fields: dict[str, object]) -> None:
    _check_backend_spec("docker", fields)


@FUZZ
@given(specs)
@counted
def test_network_spec_lxd(fields: dict[str, object]) -> None:
    _check_backend_spec("lxd", fields)


@FUZZ
@given(specs)
@counted
def test_network_spec_lxc(fields: dict[str, object]) -> None:
    _check_backend_spec("lxc", fields)
