"""LXD networks: the network verbs, and a container's place on a network.

``cman network create`` makes an LXD managed bridge named like the network (so the name
is an interface name, at most 15 characters) with the gateway address, no NAT, no IPv6
and no DHCP, plus cman's DOCKER-USER rule for the bridge (:mod:`cman.network.netfilter`);
the pure parts are :mod:`.net`. ``run --network NAME [--ip IP]`` gives the container one
NIC ``eth0`` on it and an address that cman allocates under the host's network lock,
pinned with ``raw.lxc`` so LXC sets address and default route before init on every
start; after each start or restart through cman (before the job runs) the address is
checked (and set with ``ip`` in the container when missing) and, on a no-ICC network,
the new host veth is checked to be isolated on the bridge. The isolation itself happens
before the container runs, on every start (also ``lxc start`` outside cman), from a
pre-start hook in ``raw.lxc`` (:mod:`.net`); LXD's ``security.port_isolation`` is set too.
``--network none`` leaves the container with loopback only. DNS settings go into the
container's ``/etc/resolv.conf``. On a remote daemon cman cannot reach the host side: the
forwarding rule is not installed and no-ICC networks are refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..._sys.retry import idempotent
from ...errors import CmanError, EngineError, InUse, InvalidName, InvalidValue, NetworkNotFound
from ...models import NO_NETWORK
from ..base import Feature
from . import net as _net
from .connection import _boundary, _is_transient, rollback_failed
from .exec import LxdExec

if TYPE_CHECKING:
    from ...models import ContainerSpec
    from ...network import Network, NetworkSpec

HOOK_DIR = Path("/var/lib/cman/hooks")
"""Where cman keeps the host scripts the LXD daemon runs for its containers."""


class LxdNetworks(LxdExec):
    """Managed bridges, and the set-up of the containers on them (which runs ``ip`` inside)."""

    @classmethod
    def validate_network_spec(cls, spec: NetworkSpec) -> None:
        """An LXD network is named like its bridge: the name must be an interface name."""
        from ...network import check_ifname
        from ...network.spec import check_creatable_name

        check_creatable_name(spec.name)
        try:
            check_ifname(spec.name, "network name")
        except InvalidValue as err:
            raise InvalidName(err.message, hint="on LXD a network is named like its bridge interface") from None
        if spec.bridge is not None and spec.bridge != spec.name:
            raise InvalidValue("--bridge", spec.bridge,
                               f"an LXD network's bridge is named after the network: leave --bridge out or give {spec.name}")

    @classmethod
    def default_bridge_name(cls, network: str) -> str:
        return network

    def _network_raw(self, name: str) -> dict[str, Any]:
        """GET /1.0/networks/NAME of a managed bridge; NetworkNotFound for anything else
        (LXD also answers for every host interface, unmanaged)."""
        from pylxd import exceptions as lxd_exc

        from ...network import NAME_RE as NETWORK_NAME_RE

        if not NETWORK_NAME_RE.fullmatch(name or ""):
            raise NetworkNotFound(name, "lxd")
        with _boundary(action="network inspect"):
            try:
                raw: dict[str, Any] = self.client.api.networks[quote(name, safe="")].get().json()["metadata"]
            except lxd_exc.NotFound:
                raise NetworkNotFound(name, "lxd") from None
        if not _net.is_bridge(raw):
            raise NetworkNotFound(name, "lxd")
        return raw

    def _network(self, name: str, *, detail: bool = False) -> Network:
        """The network; with ``detail`` also the host rules and isolated ports cman made for it."""
        raw = self._network_raw(name)
        extra: dict[str, Any] = {}
        if detail and self.locality().local:
            from ...network import isolation, netfilter

            extra = {
                "host_rules": [str(r) for r in netfilter.list_rules(str(raw["name"]))],
                "isolated_ports": sorted(p for p, iso in isolation.bridge_ports(str(raw["name"])).items() if iso),
            }
        return _net.to_network(raw, extra)

    def network_create(self, spec: NetworkSpec) -> Network:
        """A managed LXD bridge (see :mod:`.net`), then the host rule; on failure both go."""
        from ...network import netfilter

        if not spec.resolved or spec.bridge is None:
            raise ValueError(f"network_create needs a resolved spec, got {spec}")
        self.validate_network_spec(spec)
        local = self.locality().local
        if not spec.icc:
            self.require(Feature.NO_ICC)
        body = {"name": spec.name, "type": "bridge", "description": "made by cman",
                "config": _net.network_config(spec)}
        with _boundary(action=f"network create {spec.name}"):
            self._sync_or_wait(self.client.api.networks.post(json=body))
        try:
            if local:
                netfilter.ensure_bridge_rules(spec.name, spec.bridge, icc=spec.icc)
            return self._network(spec.name, detail=True)
        except BaseException as err:
            self._undo_network(spec, local, err)
            raise

    def _undo_network(self, spec: NetworkSpec, local: bool, err: BaseException) -> None:
        """Remove a half-made network (its host rules, the LXD network); what cannot be
        removed is said in ``err``'s own line."""
        from pylxd import exceptions as lxd_exc

        from ...network import netfilter

        left: list[str] = []
        if local:
            try:
                netfilter.remove_rules(spec.name, spec.bridge)
            except CmanError as failure:
                left.append(f"its host rules ({failure.message})")
        try:
            with _boundary(action=f"network rm {spec.name}"), contextlib.suppress(lxd_exc.NotFound):
                self._sync_or_wait(self.client.api.networks[quote(spec.name, safe="")].delete())
        except CmanError as failure:
            left.append(f"the LXD network ({failure.message})")
        if left:
            rollback_failed(err, f"and the half-made network {spec.name} could not be removed: {', '.join(left)}: "
                                 f"cman --backend lxd network rm {spec.name}")

    @idempotent(_is_transient)
    def networks(self) -> list[Network]:
        """LXD's managed bridges (cman's and others such as lxdbr0)."""
        with _boundary(action="list networks"):
            raw = self.client.api.networks.get(params={"recursion": "1"}).json()["metadata"]
        return sorted((_net.to_network(r) for r in raw if _net.is_bridge(r)), key=lambda n: n.name)

    @idempotent(_is_transient)
    def network_inspect(self, name: str) -> Network:
        return self._network(name, detail=True)

    def network_remove(self, name: str, *, force: bool = False) -> None:
        """Refused while containers are on it, unless ``force``: each then keeps everything
        but this network (its NIC becomes a ``none`` device, see :func:`.net.detached`).
        Then the LXD network (bridge, route, its firewall rules) and cman's host rules go."""
        from pylxd import exceptions as lxd_exc

        from ...network import netfilter

        raw = self._network_raw(name)
        net = _net.to_network(raw)
        if net.containers and not force:
            raise InUse.network(name, "lxd", net.containers)
        profiles = _net.profile_users(raw)
        if profiles:
            raise InUse(f"network {name} is in use by LXD profile(s) {', '.join(profiles)}",
                        hint="take it out of the profile first: lxc profile device remove PROFILE DEVICE")
        for container in net.containers:
            self._detach(container, name)
        with _boundary(action=f"network rm {name}"):
            try:
                self._while_busy(lambda: self._sync_or_wait(self.client.api.networks[quote(name, safe="")].delete()))
            except lxd_exc.NotFound:
                raise NetworkNotFound(name, "lxd") from None
        if net.managed and self.locality().local:
            netfilter.remove_rules(name, net.bridge)

    def _detach(self, container: str, network: str) -> None:
        """Take a container (running or not) off ``network``; it is kept."""
        from pylxd import exceptions as lxd_exc

        with _boundary(container=container, action=f"disconnect from network {network}"):
            try:
                raw = self.client.api.instances[container].get().json()["metadata"]
            except lxd_exc.NotFound:
                return  # gone meanwhile (an ephemeral container that stopped)
            body = _net.detached(raw, network)
            self._while_busy(lambda: self._sync_or_wait(self.client.api.instances[container].put(json=body)))

    # -- a container on a network ------------------------------------------------------------

    def _network_for(self, spec: ContainerSpec) -> Network | None:
        """The network a new container joins, checked against ``--ip``; None without one."""
        from ...network import check_container_ip

        if spec.network is None or spec.network == NO_NETWORK:
            if spec.ip is not None:
                raise InvalidValue("--ip", spec.ip, "needs --network NAME (a network with a subnet)")
            return None
        net = self._network(spec.network)
        if not net.subnet:
            raise InvalidValue("--network", spec.network, "has no IPv4 subnet for cman to give addresses from")
        if spec.ip is not None:
            check_container_ip(net, spec.ip)
        if not net.icc:
            self.require(Feature.NO_ICC, f"network {net.name} has no ICC")
        return net

    def _create_on_network(self, body: dict[str, Any], net: Network, requested: str | None,
                           placement: dict[str, Any] | None = None) -> Network:
        """Allocate the container's address and create it, under the host's network lock,
        so that no two cman processes hand out one address. Returns the network as it was then.
        ``placement``: the request's arguments for a cluster's ``--target`` (:meth:`LxdCluster._placement`)."""
        from ...network import check_container_ip, host_lock
        from ...network.alloc import allocate

        with host_lock():
            fresh = self._network(net.name)  # it may have gone (or changed) meanwhile
            if requested is not None:
                check_container_ip(fresh, requested)
            instances = self.client.api.instances.get(params={"recursion": "2"}).json()["metadata"]
            taken = _net.holders(instances, fresh.name, str(fresh.subnet))
            address = allocate(fresh.name, str(fresh.subnet), fresh.gateway, taken, requested)
            port = None if fresh.icc else _net.new_port_name()
            body["devices"][_net.NIC] = _net.nic_device(fresh, port)
            body["config"][_net.CFG_NETWORK] = fresh.name
            body["config"][_net.CFG_IP] = address
            self._sync_or_wait(self.client.api.instances.post(json=body, **(placement or {})))
        return fresh

    def _pin_address(self, ref: str, raw: Mapping[str, Any], net: Network) -> None:
        """Make the allocated address and the default route static: ``raw.lxc`` lines that
        LXC applies before init on every start (also a start outside cman)."""
        config = raw.get("config") or {}
        expanded = raw.get("expanded_config") or {}
        devices = raw.get("expanded_devices") or {}
        index = _net.nic_index(devices, _net.NIC)
        port = str((devices.get(_net.NIC) or {}).get("host_name") or "")
        hook = None
        if not net.icc and net.bridge and port:
            hook = _net.hook_line(self._no_icc_hook(), str(raw["name"]), net.bridge, port)
        block = _net.raw_lxc_block(net.name, index, str(config[_net.CFG_IP]), str(net.subnet), net.gateway, hook)
        base = str(config.get(_net.RAW_LXC) or expanded.get(_net.RAW_LXC) or "")
        patch = {"config": {_net.RAW_LXC: _net.with_block(base, block)}}
        self._sync_or_wait(self.client.api.instances[ref].patch(json=patch))

    @staticmethod
    def _no_icc_hook() -> str:
        """The no-ICC hook on this host (written when missing or stale), as a ``raw.lxc`` value."""
        from ...network import isolation

        path = HOOK_DIR / _net.HOOK_FILE
        try:
            current = path.read_text()
        except OSError:
            current = None
        if current != isolation.HOOK_SCRIPT:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                isolation.write_hook(path)
            except OSError as err:
                raise EngineError(f"lxd: cannot write the no-ICC hook {path}: {err.strerror or err}",
                                  hint=isolation.HINT) from err
        return isolation.hook_value(path)

    def _before_boot(self, raw: Mapping[str, Any]) -> None:
        """Make sure a container on a no-ICC network can start: its hook is on this host, and no
        veth of its fixed name is left over (LXD 5.0.2 leaves the host veth behind when a start
        fails in LXC, and then refuses every later start: "File exists")."""
        att = _net.attachment(raw)
        if att is None or att.port is None or not self.locality().local:
            return
        self._no_icc_hook()
        from ...network.netfilter import link_exists, run_tool

        if str(raw.get("status", "")).lower() == "stopped" and link_exists(att.port):
            run_tool(["ip", "link", "delete", "dev", att.port], check=False)

    def _network_up(self, ref: str, raw: Mapping[str, Any]) -> None:
        """After a (re)start, before the job: the container has its address and default
        route, the bridge's host rule is in place, and on a no-ICC network its bridge port
        is isolated. If that cannot be done the container is stopped: it must not run with
        less than its network promises."""
        att = _net.attachment(raw)
        if att is None or att.ip is None:
            return
        try:
            net = self._network(att.network)
            self._ensure_address(ref, raw, att, net)
            if self.locality().local:
                self._bridge_rules(net)
        except CmanError as err:
            with contextlib.suppress(CmanError):
                self.kill(ref)
            raise EngineError(
                f"lxd: {ref} was stopped: cannot set up its network {att.network} ({err})",
                hint="cman needs root and iproute2 (`ip`, `bridge`) on the host, and `ip` in the image",
            ) from err
        if self.locality().local and not net.icc and net.bridge:
            from ...network import isolation

            port = str((raw.get("config") or {}).get(f"volatile.{att.device}.host_name") or "") or None
            pid = (raw.get("state") or {}).get("pid")
            isolation.enforce("lxd", ref, int(pid) if pid else None, [isolation.Port(net.name, net.bridge, port)],
                              stop=lambda: self.kill(ref))

    def _ensure_address(self, ref: str, raw: Mapping[str, Any], att: _net.Attachment, net: Network) -> None:
        """raw.lxc gave the address at start; if it is missing (raw.lxc edited, another NIC
        index), set address and default route from outside, with ``ip`` in the container."""
        import ipaddress

        if att.ip is None or att.ip in _net.live_addresses(raw, att.iface) or not net.subnet:
            return
        subnet = ipaddress.IPv4Network(net.subnet)
        steps = [
            ["ip", "link", "set", "dev", att.iface, "up"],
            ["ip", "addr", "replace", f"{att.ip}/{subnet.prefixlen}", "brd", str(subnet.broadcast_address),
             "dev", att.iface],
        ]
        if net.gateway:
            steps.append(["ip", "route", "replace", "default", "via", net.gateway, "dev", att.iface])
        for argv in steps:
            code, err = self._exec_quiet(ref, argv)
            if code != 0:
                raise EngineError(f"`{' '.join(argv)}` in {ref} failed ({code}): {err or 'no message'}")

    def _bridge_rules(self, net: Network) -> None:
        """The bridge's forwarding rule on this host (gone after a reboot or a flush)."""
        from ...network import host_lock, netfilter

        if net.bridge and net.managed and not netfilter.list_rules(net.name, net.bridge):
            with host_lock():
                netfilter.ensure_bridge_rules(net.name, net.bridge, icc=net.icc)
