"""The network spec, its checks against the host, and the CLI's promise that an invalid
spec never reaches an engine. No engine and no host change needed: host reads and
engine calls are replaced by fakes, and any engine call in the CLI tests is a failure."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from typing import Any

import pytest

from cman import lifecycle, network
from cman.backends.base import Backend, Feature
from cman.backends.docker import DockerBackend
from cman.errors import Conflict, InvalidName, InvalidValue, NetworkNotFound, Unsupported, UsageError
from cman.lifecycle import create_network
from cman.network import (
    HostNet,
    HostRoute,
    Network,
    NetworkSpec,
    NetworkSpecConflict,
    default_bridge_name,
    netfilter,
    resolve,
    spec_diff,
)
from cman.network import host as network_host

# -- the spec -------------------------------------------------------------------------------------


def test_valid_spec_is_canonical() -> None:
    spec = NetworkSpec("web", subnet="10.203.7.0/255.255.255.0", gateway="10.203.7.254", bridge="br-web",
                       dns=("192.0.2.53", "2001:db8::1"), dns_search=("a.test", "b.test."), icc=False)
    assert spec.subnet == "10.203.7.0/24"
    assert spec.gateway == "10.203.7.254"
    assert spec.dns == ("192.0.2.53", "2001:db8::1")
    assert spec.dns_search == ("a.test", "b.test.")
    assert spec.resolved and not NetworkSpec("web").resolved
    assert spec.labels() == {"cman.dns": "192.0.2.53,2001:db8::1", "cman.dns_search": "a.test,b.test.", "cman.icc": "false"}
    assert network.spec_from_labels(spec.labels()) == {"dns": spec.dns, "dns_search": spec.dns_search, "icc": False}
    assert network.spec_from_labels({}) == {"dns": (), "dns_search": (), "icc": True}


def test_spec_lists_become_tuples() -> None:
    spec = NetworkSpec("n", dns=["192.0.2.1"], dns_search=["x.test"])  # type: ignore[arg-type]
    assert spec.dns == ("192.0.2.1",) and spec.dns_search == ("x.test",)


@pytest.mark.parametrize("name", ["", "-x", "_x", "a b", "a/b", "x" * 65, "é", "a:b"])
def test_invalid_network_names(name: str) -> None:
    with pytest.raises(InvalidName, match="network name"):
        NetworkSpec(name)


@pytest.mark.parametrize(
    ("kwargs", "field", "why"),
    [
        ({"bridge": "x" * 16}, "--bridge", "at most 15"),
        ({"bridge": ""}, "--bridge", "empty"),
        ({"bridge": "a/b"}, "--bridge", "'/'"),
        ({"bridge": "a b"}, "--bridge", "' '"),
        ({"bridge": "a\tb"}, "--bridge", "'\\t'"),
        ({"bridge": "a:b"}, "--bridge", "':'"),
        ({"bridge": "."}, "--bridge", "'.' and '..'"),
        ({"bridge": ".."}, "--bridge", "'.' and '..'"),
        ({"bridge": "-br"}, "--bridge", "'-'"),
        ({"bridge": "brü"}, "--bridge", "'ü'"),
        ({"subnet": "10.203.7.0"}, "--subnet", "CIDR"),
        ({"subnet": "nonsense"}, "--subnet", "CIDR"),
        ({"subnet": "fd00::/64"}, "--subnet", "IPv4"),
        ({"subnet": "10.203.7.5/24"}, "--subnet", "host bits are set; the network is 10.203.7.0/24"),
        ({"subnet": "10.203.7.0/31"}, "--subnet", "between /8 and /30"),
        ({"subnet": "10.0.0.0/7"}, "--subnet", "between /8 and /30"),
        ({"subnet": "127.1.0.0/16"}, "--subnet", "loopback"),
        ({"subnet": "169.254.1.0/24"}, "--subnet", "link-local"),
        ({"subnet": "224.1.0.0/16"}, "--subnet", "multicast"),
        ({"subnet": "240.1.0.0/16"}, "--subnet", "reserved"),
        ({"subnet": "0.1.0.0/16"}, "--subnet", "0.0.0.0/8"),
        ({"gateway": "10.203.7.1"}, "--gateway", "needs --subnet"),
        ({"subnet": "10.203.7.0/24", "gateway": "10.203.8.1"}, "--gateway", "outside the subnet"),
        ({"subnet": "10.203.7.0/24", "gateway": "10.203.7.0"}, "--gateway", "network or broadcast"),
        ({"subnet": "10.203.7.0/24", "gateway": "10.203.7.255"}, "--gateway", "network or broadcast"),
        ({"subnet": "10.203.7.0/24", "gateway": "fd00::1"}, "--gateway", "IPv4"),
        ({"subnet": "10.203.7.0/24", "gateway": "gw.example"}, "--gateway", "IPv4"),
        ({"dns": ("dns.example",)}, "--dns", "IP address"),
        ({"dns": ("0.0.0.0",)}, "--dns", "not a usable"),
        ({"dns": ("192.0.2.1", "192.0.2.1")}, "--dns", "twice"),
        ({"dns": ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4")}, "--dns", "at most 3"),
        ({"dns_search": ("-bad.test",)}, "--dns-search", "domain name"),
        ({"dns_search": ("under_score.test",)}, "--dns-search", "domain name"),
        ({"dns_search": ("a..b",)}, "--dns-search", "domain name"),
        ({"dns_search": ("x" * 64 + ".test",)}, "--dns-search", "domain name"),
        ({"dns_search": ("",)}, "--dns-search", "domain name"),
        ({"dns_search": ("a.test", "a.test")}, "--dns-search", "twice"),
        ({"dns_search": tuple(f"d{i}.test" for i in range(7))}, "--dns-search", "at most 6"),
        ({"dns_search": tuple(f"{'x' * 60}{i}.test" for i in range(5))}, "--dns-search", "256 characters"),
    ],
)
def test_invalid_specs_name_the_field(kwargs: dict[str, Any], field: str, why: str) -> None:
    with pytest.raises(InvalidValue) as info:
        NetworkSpec("n", **kwargs)
    message = str(info.value)
    assert message.startswith(f"invalid {field} "), message
    assert why in message, message
    assert "\n" not in message


def test_bridge_of_exactly_15_characters_is_fine() -> None:
    assert NetworkSpec("n", bridge="b" * 15).bridge == "b" * 15


def test_default_bridge_names_fit_and_differ() -> None:
    assert default_bridge_name("web") == "cm-web"
    long_names = ["cmantest-abcdef", "cmantest-abcdeg", "x" * 64]
    made = [default_bridge_name(n) for n in long_names]
    assert all(len(b) <= 15 for b in made)
    assert len(set(made)) == len(made)
    assert default_bridge_name("cmantest-abcdef") == default_bridge_name("cmantest-abcdef")
    for b in made:
        network.check_ifname(b)


# -- diff -----------------------------------------------------------------------------------------


def _net(**kw: Any) -> Network:
    base: dict[str, Any] = {"backend": "fake", "name": "n", "id": "id1", "bridge": "cm-n", "subnet": "10.203.7.0/24",
                            "gateway": "10.203.7.1", "managed": True}
    base.update(kw)
    return Network(**base)


def test_diff_ignores_fields_left_to_cman() -> None:
    assert spec_diff(_net(), NetworkSpec("n")) == []
    assert spec_diff(_net(), NetworkSpec("n", subnet="10.203.7.0/24")) == []
    assert spec_diff(_net(dns=("192.0.2.1",)), NetworkSpec("n", dns=("192.0.2.1",))) == []


def test_diff_lists_each_difference() -> None:
    diff = spec_diff(_net(dns=("192.0.2.1",)), NetworkSpec("n", subnet="10.203.8.0/24", icc=False))
    assert [d.field for d in diff] == ["subnet", "dns", "icc"]
    text = str(NetworkSpecConflict("n", "fake", diff))
    assert "subnet is 10.203.7.0/24, asked 10.203.8.0/24" in text
    assert "dns is [192.0.2.1], asked none" in text
    assert "icc is on, asked off" in text
    assert "\n" not in text


# -- the host and resolution --------------------------------------------------------------------------


def _host(*routes: tuple[str, str | None], bridges: tuple[str, ...] = ()) -> HostNet:
    links: dict[str, str | None] = {dev: ("bridge" if dev in bridges else None) for _, dev in routes if dev}
    return HostNet(tuple(HostRoute(ipaddress.IPv4Network(n), d, "route") for n, d in routes), links)


def test_read_host_parses_ip_json(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {
        ("-4", "route", "show", "table", "main"): [
            {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
            {"dst": "10.201.0.0/24", "dev": "lxdbr0"},
            {"dst": "198.51.100.7", "gateway": "192.0.2.1", "dev": "eth0"},
            {"dst": "10.99.0.0/16", "type": "blackhole"},
        ],
        ("-d", "addr", "show"): [
            {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
            {"ifname": "lxdbr0", "linkinfo": {"info_kind": "bridge"},
             "addr_info": [{"family": "inet", "local": "10.201.0.1", "prefixlen": 24},
                           {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
        ],
    }
    monkeypatch.setattr(network_host, "_ip_json", lambda *args: answers[args])
    host = network.read_host()
    nets = {(str(r.net), r.dev, r.source) for r in host.routes}
    assert ("10.201.0.0/24", "lxdbr0", "route") in nets
    assert ("198.51.100.7/32", "eth0", "route") in nets
    assert ("10.99.0.0/16", None, "route") in nets
    assert ("127.0.0.0/8", "lo", "address") in nets
    assert not any(r.net.prefixlen == 0 for r in host.routes), "the default route overlaps everything: skipped"
    assert host.is_bridge("lxdbr0") and not host.is_bridge("lo")


def test_host_conflicts_defer_bridges_only() -> None:
    host = _host(("10.203.7.0/24", "cm-n"), ("10.0.0.0/8", "tun0"), bridges=("cm-n",))
    spec = NetworkSpec("n", subnet="10.203.7.0/24")
    assert [r.dev for r in network_host.host_conflicts(spec, host, defer_bridges=False)] == ["cm-n", "tun0"]
    assert [r.dev for r in network_host.host_conflicts(spec, host, defer_bridges=True)] == ["tun0"]
    assert network_host.host_conflicts(NetworkSpec("n"), host, defer_bridges=False) == []


def test_resolve_fills_gateway_and_bridge() -> None:
    out = resolve(NetworkSpec("n", subnet="10.203.7.0/24"), bridge="cm-n", host=_host(), others=[])
    assert (out.subnet, out.gateway, out.bridge, out.resolved) == ("10.203.7.0/24", "10.203.7.1", "cm-n", True)


def test_resolve_allocates_the_first_free_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(network_host.POOL_ENV, "10.203.0.0/22")
    host = _host(("10.203.0.0/24", "eth1"))
    others = [_net(name="other", subnet="10.203.1.0/25")]
    out = resolve(NetworkSpec("n"), bridge="cm-n", host=host, others=others)
    assert out.subnet == "10.203.2.0/24" and out.gateway == "10.203.2.1"


def test_resolve_reports_an_exhausted_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(network_host.POOL_ENV, "10.203.0.0/24")
    with pytest.raises(InvalidValue, match="no free /24"):
        resolve(NetworkSpec("n"), bridge="cm-n", host=_host(("10.203.0.0/24", "eth1")), others=[])


def test_resolve_rejects_overlaps_with_host_and_other_networks() -> None:
    with pytest.raises(InvalidValue, match=r"overlaps the host's route 10\.203\.0\.0/16 on eth1"):
        resolve(NetworkSpec("n", subnet="10.203.7.0/24"), bridge="cm-n", host=_host(("10.203.0.0/16", "eth1")), others=[])
    with pytest.raises(InvalidValue, match=r"overlaps network fake:other \(10\.203\.7\.128/25\)"):
        resolve(NetworkSpec("n", subnet="10.203.7.0/24"), bridge="cm-n", host=_host(),
                others=[_net(name="other", subnet="10.203.7.128/25")])


def test_container_ip_and_dns_helpers() -> None:
    net = _net(dns=("192.0.2.1",), dns_search=("a.test",))
    network.check_container_ip(net, "10.203.7.9")
    for bad, why in (("10.203.8.9", "outside"), ("10.203.7.1", "gateway"), ("10.203.7.255", "broadcast"), ("x", "IPv4")):
        with pytest.raises(InvalidValue, match=why):
            network.check_container_ip(net, bad)
    assert network.container_dns(net, (), ()) == (("192.0.2.1",), ("a.test",))
    assert network.container_dns(net, ("192.0.2.9",), ()) == (("192.0.2.9",), ("a.test",))
    assert network.container_dns(net, (), ("b.test",)) == (("192.0.2.1",), ("b.test",))
    assert network.container_dns(None, (), ()) == ((), ())
    text = network.render_resolv_conf(("192.0.2.1", "192.0.2.2"), ("a.test", "b.test"))
    assert [ln for ln in text.splitlines() if not ln.startswith("#")] == [
        "nameserver 192.0.2.1", "nameserver 192.0.2.2", "search a.test b.test"]


# -- create_network with a fake backend ------------------------------------------------------------


class FakeBackend(Backend):
    """Implements only networks; records every call so tests can say "no engine call"."""

    name = "fake"
    capabilities = frozenset({Feature.NETWORKS, Feature.NO_ICC})

    def __init__(self, existing: list[Network] | None = None) -> None:
        self.nets = {n.name: n for n in existing or []}
        self.calls: list[str] = []

    def network_create(self, spec: NetworkSpec) -> Network:
        self.calls.append(f"create {spec.name}")
        assert spec.resolved
        net = Network.from_spec(spec, "fake", f"id-{spec.name}")
        self.nets[spec.name] = net
        return net

    def networks(self) -> list[Network]:
        self.calls.append("networks")
        return list(self.nets.values())

    def network_inspect(self, name: str) -> Network:
        self.calls.append(f"inspect {name}")
        try:
            return self.nets[name]
        except KeyError:
            raise NetworkNotFound(name, "fake") from None

    # the container half of the contract is not used here
    probe = validate_name = pull = images = image_inspect = image_history = image_remove = None  # type: ignore[assignment]
    image_prune = image_import = create = start = start_attached = stop = remove = None  # type: ignore[assignment]
    containers = inspect = exec = logs = wait = init_pid = None  # type: ignore[assignment]


@pytest.fixture
def quiet_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    monkeypatch.setattr(lifecycle, "read_host", lambda: _host(("192.0.2.0/24", "eth0")))
    monkeypatch.setenv(network_host.LOCK_ENV, str(tmp_path / "network.lock"))
    yield


@pytest.mark.usefixtures("quiet_host")
def test_create_then_idempotent_then_conflict() -> None:
    backend = FakeBackend()
    spec = NetworkSpec("n", subnet="10.203.7.0/24", dns=("192.0.2.53",), icc=False)
    made, created = create_network(backend, spec)
    assert created and made.bridge == "cm-n" and made.gateway == "10.203.7.1"
    again, created = create_network(backend, spec)
    assert not created and again == made
    assert not create_network(backend, NetworkSpec("n", dns=("192.0.2.53",), icc=False))[1]
    with pytest.raises(NetworkSpecConflict) as info:
        create_network(backend, NetworkSpec("n", subnet="10.203.7.0/24"))
    assert [d.field for d in info.value.diff] == ["dns", "icc"]
    assert info.value.exit_code == 4


@pytest.mark.usefixtures("quiet_host")
def test_create_refuses_an_existing_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "read_host", lambda: HostNet((), {"cm-n": "bridge"}))
    backend = FakeBackend()
    with pytest.raises(Conflict, match="interface cm-n already exists"):
        create_network(backend, NetworkSpec("n", subnet="10.203.7.0/24"))
    assert "create n" not in backend.calls


@pytest.mark.usefixtures("quiet_host")
def test_invalid_host_overlap_is_rejected_before_any_engine_call() -> None:
    backend = FakeBackend()
    with pytest.raises(InvalidValue, match=r"overlaps the host's route 192\.0\.2\.0/24 on eth0"):
        create_network(backend, NetworkSpec("n", subnet="192.0.2.0/25"))
    assert backend.calls == []


def test_unsupported_backend_is_rejected_before_any_engine_call(tmp_path: Any) -> None:
    class NoNets(FakeBackend):
        capabilities = frozenset()

    backend = NoNets()
    with pytest.raises(Unsupported, match="networks"):
        create_network(backend, NetworkSpec("n"))
    assert backend.calls == []


def test_docker_refuses_its_predefined_names() -> None:
    for name in ("bridge", "host", "none"):
        with pytest.raises(InvalidName, match="predefined"):
            DockerBackend.validate_network_spec(NetworkSpec(name))


def test_host_lock_excludes_other_processes_and_is_reentrant(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    lock = tmp_path / "sub" / "network.lock"
    monkeypatch.setenv(network_host.LOCK_ENV, str(lock))
    code = ("import os, time; from cman.network import host as network_host\n"
            "with network_host.host_lock(timeout=0.3): pass\n")
    with network_host.host_lock():
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env={**__import__("os").environ, network_host.LOCK_ENV: str(lock)})
    assert other.returncode != 0 and "EngineTimeout" in other.stderr
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, network_host.LOCK_ENV: str(lock)})
    assert free.returncode == 0, free.stderr
    with network_host.host_lock(), network_host.host_lock(timeout=0.1):  # re-entrant in one thread
        pass


# -- netfilter parsing ------------------------------------------------------------------------------


def test_rules_parse_and_tag() -> None:
    text = (
        "-N DOCKER-USER\n"
        "-A DOCKER-USER -i cm-a -o cm-a -m comment --comment cman:a -j ACCEPT\n"
        '-A DOCKER-USER -i cm-b -o cm-b -m comment --comment "cman:b" -j DROP\n'
        "-A DOCKER-USER -i lxdbr0 -o lxdbr0 -j ACCEPT\n"
        "-A DOCKER-USER -j RETURN\n"
    )
    rules = netfilter.parse_rules(text)
    assert [r.comment for r in rules] == ["cman:a", "cman:b", None, None]
    assert rules[0] == netfilter.bridge_rule("a", "cm-a")
    assert rules[1] == netfilter.bridge_rule("b", "cm-b", icc=False)
    assert str(rules[0]) == "-A DOCKER-USER -i cm-a -o cm-a -m comment --comment cman:a -j ACCEPT"
    assert rules[1].option("-i") == "cm-b"


def test_list_and_remove_rules_use_the_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    listing = ("-A DOCKER-USER -i cm-a -o cm-a -m comment --comment cman:a -j ACCEPT\n"
               "-A DOCKER-USER -i cm-x -o cm-x -m comment --comment cman:a -j ACCEPT\n"
               "-A DOCKER-USER -i cm-ab -o cm-ab -m comment --comment cman:ab -j ACCEPT\n")
    ran: list[tuple[str, ...]] = []

    def fake_run(argv: Any, *, check: bool = True) -> Any:
        ran.append(tuple(argv))
        from cman._sys.proc import Completed

        return Completed(tuple(argv), 0, listing if "-S" in argv else "", "")

    monkeypatch.setattr(netfilter, "run_tool", fake_run)
    monkeypatch.setattr(netfilter.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    assert [r.option("-i") for r in netfilter.list_rules("a")] == ["cm-a", "cm-x"]
    assert [r.option("-i") for r in netfilter.list_rules("a", "cm-a")] == ["cm-a"]
    removed = netfilter.remove_rules("a", "cm-a")
    assert [str(r) for r in removed] == ["-A DOCKER-USER -i cm-a -o cm-a -m comment --comment cman:a -j ACCEPT"]
    deletes = [a for a in ran if "-D" in a]
    assert deletes == [("iptables", "-w", "10", "-D", "DOCKER-USER", "-i", "cm-a", "-o", "cm-a", "-m", "comment",
                        "--comment", "cman:a", "-j", "ACCEPT")]


# -- the CLI: invalid input never reaches an engine ----------------------------------------------------


class Tripwire(DockerBackend):
    """A Docker backend whose every engine call fails the test."""

    @property
    def api(self) -> Any:
        raise AssertionError("an engine call was made")


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from cman import backends

    monkeypatch.setattr(backends, "load", lambda name: Tripwire())
    monkeypatch.setattr(lifecycle, "read_host", lambda: _host(("192.0.2.0/24", "eth0"), ("10.201.0.0/24", "lxdbr0"),
                                                           bridges=("lxdbr0",)))
    monkeypatch.setenv(network_host.LOCK_ENV, str(tmp_path / "network.lock"))


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from cman.cli import main

    code = main(["--backend", "docker", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "AssertionError" not in err, err
    return code, err


@pytest.mark.usefixtures("no_engine")
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("bad name",), "invalid network name"),
        (("n", "--subnet", "10.203.7.1/24"), "host bits"),
        (("n", "--subnet", "fd00::/64"), "--subnet"),
        (("n", "--subnet", "192.0.2.0/26"), "overlaps the host's route 192.0.2.0/24 on eth0"),
        (("n", "--gateway", "10.203.7.1"), "needs --subnet"),
        (("n", "--subnet", "10.203.7.0/24", "--gateway", "10.203.9.1"), "outside the subnet"),
        (("n", "--bridge", "much-too-long-name"), "--bridge"),
        (("n", "--bridge", "a/b"), "--bridge"),
        (("n", "--dns", "resolver.example"), "--dns"),
        (("n", "--dns-search", "bad_domain"), "--dns-search"),
        (("bridge",), "predefined"),
    ],
)
def test_cli_rejects_invalid_specs_without_engine(capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                                  needle: str) -> None:
    code, err = _main(capsys, "network", "create", *args)
    assert code == 2, err
    assert err.startswith("cman: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err, err


@pytest.mark.usefixtures("no_engine")
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--ip", "10.203.7.9"), "needs --network"),
        (("--network", "n", "--ip", "10.203.7"), "--ip"),
        (("--network", "bad name"), "invalid network name"),
        (("--dns", "nope"), "--dns"),
        (("--dns-search", "-x"), "--dns-search"),
    ],
)
def test_cli_container_network_options_are_checked_first(capsys: pytest.CaptureFixture[str],
                                                          args: tuple[str, ...], needle: str) -> None:
    code, err = _main(capsys, "create", *args, "local/busybox", "true")
    assert code == 2 and needle in err, err
    code, err = _main(capsys, "run", "--rm", *args, "local/busybox", "true")
    assert code == 125 and needle in err, err


def test_network_json_shape() -> None:
    data = json.loads(json.dumps(_net(containers=("a",)).to_dict()))
    assert {"backend", "name", "id", "bridge", "subnet", "gateway", "dns", "dns_search", "icc", "containers",
            "managed", "created", "extra"} <= data.keys()
    assert issubclass(NetworkSpecConflict, Conflict) and issubclass(InvalidValue, UsageError)
