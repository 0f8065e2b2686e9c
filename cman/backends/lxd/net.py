"""Networks of the LXD backend: the pure parts (config keys, conversions, addresses, raw.lxc).

What a cman network is on LXD:

- **An LXD managed bridge network** named like its bridge (so the name is an interface
  name, at most 15 characters): ``ipv4.address`` = gateway/prefix, ``ipv4.nat=false``,
  ``ipv6.address=none`` and ``ipv4.dhcp=false`` (cman hands out the addresses; LXD's
  dnsmasq stays the bridge's resolver, as on any LXD bridge). The parts of the spec LXD
  has no key for (dns, dns_search, icc) are ``user.cman.*`` keys (:func:`network_config`),
  with ``user.cman.managed=true``.
- **Host rules** from :mod:`cman.network.netfilter`: the DOCKER-USER rule that lets the
  bridge's ports talk next to Docker's FORWARD DROP (DROP without ICC), and bridge port isolation
  of each container's host veth on a no-ICC network. cman sets LXD's own
  ``security.port_isolation`` on the NIC (LXD 5.0.2 applied it when checked again for issue
  13, although earlier notes saw it ignored), and does not depend on it: its pre-start hook
  isolates the port on every start, and cman checks it after every start through cman.
- **A container** on a network has one NIC device ``eth0`` on it and an address that cman
  allocated under :func:`cman.network.host_lock` (:func:`cman.network.alloc.allocate`):
  ``--ip``, or the first free host that is not the gateway. The address is recorded in ``user.cman.ip`` (with
  ``user.cman.network``) and made static with ``raw.lxc`` (:func:`raw_lxc_block`:
  ``lxc.net.N.ipv4.address`` and ``.gateway``, the keys LXD lets through), so LXC sets
  address and default route before init runs, on every start, also a start outside cman.
  LXD refuses a NIC ``ipv4.address`` on a network without DHCP, and the images cman runs
  (busybox) ask no DHCP server anyway.
- **No ICC before the container runs.** On a no-ICC network the NIC gets a fixed host-side
  name (``host_name``, :func:`new_port_name`) and ``raw.lxc`` a ``lxc.hook.pre-start`` line
  (:func:`hook_line`) that runs :data:`cman.network.isolation.HOOK_SCRIPT` on the host with
  that name, so the port is isolated on every start, also ``lxc start`` outside cman, before
  the container's end of the veth exists. Checked on LXD 5.0.2: it refuses
  ``lxc.net.N.script.up`` in ``raw.lxc`` ("Only interface-specific ipv4/ipv6 lxc.net. keys
  are allowed") but accepts ``lxc.hook.pre-start``, which LXC runs after LXD put the host
  veth on the bridge (its peer still on the host, down) and before init; a hook that fails
  or is missing makes the start fail. The fixed name has a cost: a copy of the container
  (``lxc copy``) keeps it, and cannot start while the original runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...network import Network, NetworkSpec

CFG_MANAGED = "user.cman.managed"
CFG_NETWORK = "user.cman.network"
"""Instance key: the cman network its NIC ``eth0`` is on."""
CFG_IP = "user.cman.ip"
"""Instance key: the address cman allocated to it on that network."""
LABEL_PREFIX = "user."
"""A spec label ``cman.dns`` is the network key ``user.cman.dns``."""
NIC = "eth0"
"""The device (and interface) name of a container's NIC on a cman network."""
RAW_LXC = "raw.lxc"
RAW_MARK = "# cman network "
HOOK_KEY = "lxc.hook.pre-start"
HOOK_FILE = "lxd-no-icc"
"""The file name of cman's no-ICC hook on the host (its folder: see :mod:`.networks`)."""
PORT_PREFIX = "cmi"
"""Host-side veth names cman gives NICs on no-ICC networks: ``cmi`` + 12 hex digits (15 characters)."""
"""Starts the comment line above cman's lines in ``raw.lxc``; they end at the next non-``lxc.net.`` line."""
INSTANCES = "/1.0/instances/"
PROFILES = "/1.0/profiles/"


# -- networks ----------------------------------------------------------------------------------


def network_config(spec: NetworkSpec) -> dict[str, str]:
    """The LXD config of a resolved spec's network."""
    config = {
        "ipv4.address": f"{spec.gateway}/{spec.prefixlen}",
        "ipv4.nat": "false",
        "ipv4.dhcp": "false",
        "ipv6.address": "none",
        CFG_MANAGED: "true",
    }
    config.update({LABEL_PREFIX + k: v for k, v in spec.labels().items() if v})
    return config


def is_bridge(raw: Mapping[str, Any]) -> bool:
    """An LXD *managed* bridge: LXD also lists every host interface (eth0, docker0) as a network."""
    return bool(raw.get("managed")) and raw.get("type") == "bridge"


def _path_names(used_by: Iterable[str], prefix: str) -> list[str]:
    from urllib.parse import unquote

    out = []
    for url in used_by:
        path = str(url).split("?", 1)[0]
        if path.startswith(prefix):
            out.append(unquote(path[len(prefix):]))
    return sorted(out)


def instance_users(raw: Mapping[str, Any]) -> list[str]:
    """Names of the instances in a network's ``used_by`` (running or not)."""
    return _path_names(raw.get("used_by") or (), INSTANCES)


def profile_users(raw: Mapping[str, Any]) -> list[str]:
    return _path_names(raw.get("used_by") or (), PROFILES)


def gateway_and_subnet(config: Mapping[str, Any]) -> tuple[str | None, str | None]:
    text = str(config.get("ipv4.address") or "")
    if not text or text == "none" or "/" not in text:
        return None, None
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        return None, None
    return str(iface.ip), str(iface.network)


def to_network(raw: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Network:
    """GET /1.0/networks/NAME -> a Network (the bridge is the network's name)."""
    from ...network import Network, spec_from_labels

    config = raw.get("config") or {}
    managed = config.get(CFG_MANAGED) == "true"
    labels = {k[len(LABEL_PREFIX):]: str(v) for k, v in config.items() if k.startswith(LABEL_PREFIX)}
    recorded = spec_from_labels(labels)
    gateway, subnet = gateway_and_subnet(config)
    name = str(raw["name"])
    return Network(
        backend="lxd",
        name=name,
        id=name,  # LXD networks have no ID: the name is the key
        bridge=name,
        subnet=subnet,
        gateway=gateway,
        dns=recorded["dns"] if managed else (),
        dns_search=recorded["dns_search"] if managed else (),
        icc=recorded["icc"] if managed else True,
        containers=tuple(instance_users(raw)),
        managed=managed,
        created=None,  # LXD does not record when a network was made
        extra={
            "type": raw.get("type"),
            "status": raw.get("status"),
            "description": raw.get("description") or "",
            "config": dict(config),
            "used_by": list(raw.get("used_by") or ()),
            **(extra or {}),
        },
    )


# -- a container's NIC ---------------------------------------------------------------------------


def new_port_name() -> str:
    """A fresh host-side veth name for a NIC on a no-ICC network."""
    import secrets

    return PORT_PREFIX + secrets.token_hex(6)


def nic_device(network: Network, port: str | None = None) -> dict[str, str]:
    """The NIC device of a container joined to ``network``; ``port``: its fixed host-side name."""
    device = {"type": "nic", "name": NIC, "network": network.name}
    if not network.icc:
        # LXD's own switch; cman's pre-start hook and its check after start do not rely on it.
        device["security.port_isolation"] = "true"
    if port is not None:
        device["host_name"] = port
    return device


def hook_line(hook: str, container: str, bridge: str, port: str) -> str:
    """The ``raw.lxc`` line that isolates ``port`` on ``bridge`` before each start.

    ``hook`` is the script's path as :func:`cman.network.isolation.hook_value` escapes it; the
    arguments are the ones LXC gives a veth's ``script.up`` (NAME net up veth BRIDGE PORT),
    which the script expects. All of them are interface or LXD names, so nothing needs quoting.
    """
    return f"{HOOK_KEY} = {hook} {container} net up veth {bridge} {port}"


def nic_index(expanded_devices: Mapping[str, Mapping[str, Any]], device: str) -> int:
    """The ``lxc.net.N`` index LXD gives ``device``: NIC devices are numbered in name order."""
    nics = sorted(name for name, dev in expanded_devices.items() if dev.get("type") == "nic")
    if device not in nics:
        raise ValueError(f"{device} is not a NIC device of the instance")
    return nics.index(device)


def raw_lxc_block(network: str, index: int, address: str, subnet: str, gateway: str | None,
                  hook: str | None = None) -> list[str]:
    """``raw.lxc`` lines that give the NIC its address and default route at every start
    (and with ``hook``, a :func:`hook_line`, isolate its port first)."""
    net = ipaddress.IPv4Network(subnet)
    lines = [
        f"{RAW_MARK}{network}: address allocated by cman",
        f"lxc.net.{index}.ipv4.address = {address}/{net.prefixlen} {net.broadcast_address}",
    ]
    if gateway:
        lines.append(f"lxc.net.{index}.ipv4.gateway = {gateway}")
    if hook:
        lines.append(hook)
    return lines


def _cmans_line(stripped: str) -> bool:
    """A line of cman's block: an ``lxc.net.`` key, or the pre-start hook that runs cman's script."""
    key, _, value = stripped.partition("=")
    key = key.strip()
    if key.startswith("lxc.net."):
        return True
    words = value.split()
    return key == HOOK_KEY and bool(words) and words[0].endswith("/" + HOOK_FILE)


def without_block(text: str) -> str:
    """``raw.lxc`` text without cman's network lines (the rest kept as it was)."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(RAW_MARK):
            inside = True
            continue
        if inside and _cmans_line(stripped):
            continue
        inside = False
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def with_block(text: str, block: Sequence[str]) -> str:
    """``raw.lxc`` text with cman's lines replaced by ``block``."""
    base = without_block(text)
    return base + "\n".join(block) + "\n"


@dataclass(frozen=True)
class Attachment:
    """A container's place on a cman network, from its config."""

    network: str
    device: str
    iface: str
    ip: str | None
    port: str | None = None
    """The fixed host-side veth name (a NIC on a no-ICC network made by this cman)."""


def attachment(raw: Mapping[str, Any]) -> Attachment | None:
    """The cman network a container (GET /1.0/instances/NAME) is on, if any."""
    config = raw.get("config") or {}
    network = config.get(CFG_NETWORK)
    if not network:
        return None
    devices = raw.get("expanded_devices") or raw.get("devices") or {}
    for name, dev in sorted(devices.items()):
        if dev.get("type") == "nic" and dev.get("network") == network:
            return Attachment(str(network), name, str(dev.get("name") or name), config.get(CFG_IP) or None,
                              str(dev.get("host_name") or "") or None)
    return None


def live_addresses(raw: Mapping[str, Any], iface: str) -> list[str]:
    """The IPv4 addresses interface ``iface`` has now (LXD's instance state)."""
    network = ((raw.get("state") or {}).get("network") or {}).get(iface) or {}
    return [str(a.get("address")) for a in network.get("addresses") or [] if a.get("family") == "inet"]


def holders(instances: Iterable[Mapping[str, Any]], network: str, subnet: str) -> dict[str, str]:
    """Address -> container, for every address in use on ``network``: the ones cman
    allocated (running or not) and any other address the containers on it have now."""
    net = ipaddress.IPv4Network(subnet)
    out: dict[str, str] = {}
    for raw in instances:
        name = str(raw.get("name"))
        devices = raw.get("expanded_devices") or {}
        on = [d for d, dev in devices.items() if dev.get("type") == "nic" and dev.get("network") == network]
        if not on:
            continue
        config = raw.get("config") or {}
        found: list[str] = []
        if config.get(CFG_NETWORK) == network and config.get(CFG_IP):
            found.append(str(config[CFG_IP]))
        for device in on:
            found += live_addresses(raw, str(devices[device].get("name") or device))
        for text in found:
            with contextlib.suppress(ValueError):
                if ipaddress.IPv4Address(text) in net:
                    out.setdefault(str(ipaddress.IPv4Address(text)), name)
    return out


def detached(raw: Mapping[str, Any], network: str) -> dict[str, Any]:
    """The PUT body of an instance (GET /1.0/instances/NAME) taken off ``network``.

    Each NIC on it becomes a ``none`` device, which also masks a profile's NIC of that
    name: the container keeps everything but that network (it does not fall back to
    the profile's bridge). cman's address keys and raw.lxc lines go.
    """
    config = {k: v for k, v in (raw.get("config") or {}).items()}
    devices = {k: dict(v) for k, v in (raw.get("devices") or {}).items()}
    for name, dev in (raw.get("expanded_devices") or {}).items():
        if dev.get("type") == "nic" and dev.get("network") == network:
            devices[name] = {"type": "none"}
    if config.get(CFG_NETWORK) == network:
        config.pop(CFG_NETWORK, None)
        config.pop(CFG_IP, None)
        if RAW_LXC in config:
            rest = without_block(str(config[RAW_LXC]))
            if rest.strip():
                config[RAW_LXC] = rest
            else:
                config.pop(RAW_LXC)
    return {
        "architecture": raw.get("architecture"),
        "config": config,
        "devices": devices,
        "ephemeral": bool(raw.get("ephemeral")),
        "profiles": list(raw.get("profiles") or []),
        "description": raw.get("description") or "",
        "stateful": bool(raw.get("stateful")),
    }
