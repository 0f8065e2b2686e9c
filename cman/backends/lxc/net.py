"""Networks of the raw LXC backend: cman's records, the bridge, addresses, and what a container gets.

Raw LXC has no network object, so cman keeps one per network of an LXC path:

- **The record** ``LXCPATH/.cman-networks/NAME.json``: the resolved spec (subnet, gateway,
  bridge, dns, dns_search, icc), ``managed``, an ID, the creation time and
  ``allocations`` (container name -> IPv4 address). It is written atomically and changed
  only under :func:`cman.network.host_lock`, so two cman processes never hand out one
  address twice. An allocation whose container no longer exists (destroyed outside
  cman, or an ephemeral ``--rm`` container that LXC destroyed itself) is dropped the
  next time the record changes.
- **The bridge** is cman's own (:func:`cman.network.netfilter.create_bridge`, with the gateway
  address), and :func:`cman.network.netfilter.ensure_bridge_rules` keeps forwarding between its
  ports working next to Docker's FORWARD DROP (DROP instead for a no-ICC network).
  Both come back when a container on the network starts and the bridge is missing
  (the host rebooted).
- **A container** joined to a network gets one veth (see :func:`veth_entries`) with the
  address cman allocated (:mod:`cman.network.alloc`): the first free host of the subnet
  that is not the gateway, or ``--ip`` once :func:`cman.network.check_container_ip` accepted it and no other
  container holds it.
- **No ICC.** LXC runs :data:`cman.network.isolation.HOOK_SCRIPT` (``lxc.net.0.script.up``) on the host once
  the container's veth is on the bridge and before the container starts, so the port is
  isolated from the first frame, also when the container is started by hand
  with ``lxc-start``; cman then checks it with :func:`cman.network.isolation.enforce`
  after every start through cman. Port isolation blocks layer 2 (ARP), the DROP rule
  layer 3.
- **DNS** goes into the rootfs's ``/etc/resolv.conf`` (:func:`write_resolv_conf`, which
  never follows a symlink out of the rootfs).

This module is the data and the files; the verbs that use them are in :mod:`.networks`.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._sys import files as _files
from ..._sys.times import now_iso
from ...errors import EngineError, InvalidName, NetworkNotFound
from ...network import isolation
from .rootfs import Layers, write_file

if TYPE_CHECKING:
    from ...models import ContainerSpec
    from ...network import Network, NetworkSpec

BRIDGE_MARK = "cman:lxc:"
"""The ``ip link`` alias of a bridge cman made for an LXC network: ``cman:lxc:NETWORK:PATHID``."""
RECORDS_DIR = ".cman-networks"
"""Inside the LXC path; dot-named, so neither cman nor lxc-ls takes it for a container."""
HOOK_NAME = "cman-isolate-port"
"""The no-ICC hook script, in the container's directory."""



# -- bridges ----------------------------------------------------------------------------------


def path_id(lxcpath: str) -> str:
    """A short, fixed id of an LXC path: bridges are host-wide, records are per LXC path."""
    import hashlib

    return hashlib.sha256(lxcpath.encode()).hexdigest()[:12]


def bridge_mark(lxcpath: str, network: str) -> str:
    """The alias that marks a bridge as made by cman for ``network`` of ``lxcpath``
    (network names are short and plain: well under the kernel's 128 bytes)."""
    return f"{BRIDGE_MARK}{network}:{path_id(lxcpath)}"


def parse_bridge_mark(alias: str, lxcpath: str) -> str | None:
    """The network a bridge's alias names, when cman made that bridge for ``lxcpath``."""
    if not alias.startswith(BRIDGE_MARK):
        return None
    network, sep, pid = alias[len(BRIDGE_MARK):].rpartition(":")
    return network if sep and network and pid == path_id(lxcpath) else None


# -- records ----------------------------------------------------------------------------------


class Records:
    """The network records of one LXC path. Reads need no lock; changes need host_lock."""

    def __init__(self, lxcpath: str) -> None:
        self.dir = Path(lxcpath) / RECORDS_DIR

    def path(self, name: str) -> Path:
        from ...network import check_network_name

        check_network_name(name)  # a record's name is a file name: never a path
        return self.dir / f"{name}.json"

    def get(self, name: str) -> dict[str, Any]:
        """The record of network ``name``; NetworkNotFound when there is none (or the name is invalid)."""
        try:
            path = self.path(name)
        except InvalidName:
            raise NetworkNotFound(name, "lxc") from None
        record = _files.read_json(path)
        if record is None or record.get("name") != name:
            raise NetworkNotFound(name, "lxc")
        return record

    def find(self, name: str) -> dict[str, Any] | None:
        with contextlib.suppress(NetworkNotFound):
            return self.get(name)
        return None

    def all(self) -> list[dict[str, Any]]:
        try:
            entries = sorted(self.dir.iterdir())
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            if entry.suffix == ".json" and not entry.name.startswith("."):
                record = _files.read_json(entry)
                if record is not None and record.get("name") == entry.stem:
                    out.append(record)
        return out

    def save(self, record: dict[str, Any]) -> None:
        """Write ``record`` atomically (call under host_lock)."""
        path = self.path(str(record["name"]))
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _files.write_json(path, record)

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)


def new_record(spec: NetworkSpec) -> dict[str, Any]:
    """The record of a freshly created network (a resolved spec)."""
    return {
        "managed": True,
        "id": os.urandom(32).hex(),
        "name": spec.name,
        "subnet": spec.subnet,
        "gateway": spec.gateway,
        "bridge": spec.bridge,
        "dns": list(spec.dns),
        "dns_search": list(spec.dns_search),
        "icc": spec.icc,
        "labels": spec.labels(),
        "created": now_iso(),
        "allocations": {},
    }


# -- addresses --------------------------------------------------------------------------------


def live_allocations(record: Mapping[str, Any], alive: Callable[[str], bool]) -> dict[str, str]:
    """The record's allocations whose container still exists and is still on this network."""
    allocations = record.get("allocations") or {}
    return {str(c): str(ip) for c, ip in sorted(allocations.items()) if alive(str(c))}


def allocate(record: dict[str, Any], container: str, requested: str | None,
             alive: Callable[[str], bool]) -> str:
    """Give ``container`` an address on the network and record it in ``record`` (not saved).

    Stale allocations (``alive`` says their container is gone) are dropped first; the
    choice is :func:`cman.network.alloc.allocate`'s.
    """
    from ...network.alloc import allocate as choose

    allocations = live_allocations(record, alive)
    allocations.pop(container, None)  # an earlier container of that name is gone
    holders = {ip: c for c, ip in allocations.items()}
    address = choose(str(record["name"]), str(record["subnet"]), record.get("gateway"), holders, requested)
    allocations[container] = address
    record["allocations"] = allocations
    return address


def release(record: dict[str, Any], container: str, alive: Callable[[str], bool]) -> bool:
    """Drop ``container``'s allocation (and stale ones); True when the record changed."""
    before = dict(record.get("allocations") or {})
    allocations = live_allocations(record, alive)
    allocations.pop(container, None)
    record["allocations"] = allocations
    return allocations != before


# -- container config --------------------------------------------------------------------------


def new_hwaddr() -> str:
    """A MAC address for a container's eth0 in the prefix LXC's templates use (00:16:3e).

    Fixed at create, so a restarted container keeps it and its peers' ARP caches stay right.
    """
    return "00:16:3e:" + ":".join(f"{b:02x}" for b in os.urandom(3))


def veth_entries(network: str, bridge: str, address: str, prefixlen: int, gateway: str | None,
                 hook: Path | None, hwaddr: str | None = None) -> list[tuple[str, str] | str]:
    """The config entries of a container's one veth on ``bridge`` (values checked by render_config)."""
    entries: list[tuple[str, str] | str] = [
        f"network {network}: a veth on bridge {bridge}, address allocated by cman",
        ("lxc.net.0.type", "veth"),
        ("lxc.net.0.link", bridge),
        ("lxc.net.0.flags", "up"),
        ("lxc.net.0.name", "eth0"),
    ]
    if hwaddr:
        entries.append(("lxc.net.0.hwaddr", hwaddr))
    entries.append(("lxc.net.0.ipv4.address", f"{address}/{prefixlen}"))
    if gateway:
        entries.append(("lxc.net.0.ipv4.gateway", gateway))
    if hook is not None:
        entries += [f"no ICC on {network}: isolate the bridge port before the container starts",
                    ("lxc.net.0.script.up", isolation.hook_value(hook))]
    return entries


EMPTY_NETWORK: list[tuple[str, str] | str] = ["network: loopback only", ("lxc.net.0.type", "empty")]


def detach_config(text: str) -> str:
    """Config text with every ``lxc.net.*`` entry (and cman's comments on them) replaced by
    ``lxc.net.0.type = empty``: the container keeps everything but its network."""
    out: list[str] = []
    placed = False
    for line in text.splitlines():
        stripped = line.strip()
        key = stripped.partition("=")[0].strip()
        is_net = key.startswith("lxc.net.") or key == "lxc.net"
        is_net_comment = stripped.startswith(("# network", "# no ICC on "))
        if is_net or is_net_comment:
            if not placed:
                out += ["# network: loopback only (detached by cman network rm -f)", "lxc.net.0.type = empty"]
                placed = True
            continue
        out.append(line)
    if not placed:
        out.append("lxc.net.0.type = empty")
    return "\n".join(out) + "\n"


# -- resolv.conf ------------------------------------------------------------------------------


def write_resolv_conf(rootfs: Path | Layers, text: str, owner: tuple[int, int] | None = None) -> None:
    """Write ``rootfs/etc/resolv.conf`` without following a symlink anywhere on the way.

    An image may ship ``/etc/resolv.conf`` (or ``/etc``) as a symlink, often to an
    absolute path that on the host is the host's own file: the link itself is
    replaced by a regular file, and a symlinked ``/etc`` is refused. ``owner`` is the
    container's root as host ids (unprivileged containers), so it can change the file.
    An overlay rootfs (:class:`.rootfs.Layers`) gets the file in its upper layer.
    """
    try:
        if isinstance(rootfs, Layers):
            write_file(rootfs, "etc/resolv.conf", text.encode(), mode=0o644, owner=owner)
        else:
            _files.write_beneath(rootfs, "etc/resolv.conf", text.encode(), mode=0o644, owner=owner)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise EngineError(f"lxc: cannot write /etc/resolv.conf into {rootfs}: /etc in the image is not a "
                              "directory (a symlink?)", hint="use an image with a real /etc") from err
        raise EngineError(f"lxc: cannot write /etc/resolv.conf into {rootfs}: {err.strerror}") from err


def write_dns(rootfs: Path | Layers, network: Network | None, spec: ContainerSpec,
              owner: tuple[int, int] | None = None) -> None:
    """The container's --dns/--dns-search, each falling back to the network's, into its
    rootfs's resolv.conf; with none at all the image's file stays."""
    from ...network import container_dns, render_resolv_conf

    servers, search = container_dns(network, spec.dns, spec.dns_search)
    if servers or search:
        write_resolv_conf(rootfs, render_resolv_conf(servers, search), owner)

