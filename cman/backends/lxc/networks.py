"""Network verbs of the LXC backend, and a container's place on a network.

Raw LXC has no network object: cman records each network of an LXC path, makes the
bridge itself and installs the host rules (the records, the veth config, the hook and
resolv.conf are in :mod:`.net`). Without ``--network`` (or with ``--network none``) a
container has loopback only (``lxc.net.0.type = empty``). ``--dns``/``--dns-search`` (or
the network's) are written into the rootfs's ``/etc/resolv.conf`` at create. The address
is the container's from create to rm, so ``inspect`` shows it (under the network's name)
also while the container is stopped. Changes to records happen under
:func:`cman.network.host_lock`, taken before the LXC path's lock, never inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._sys import files as _files
from ..._sys import proc as _proc
from ..._sys.times import now_iso
from ...errors import CmanError, Conflict, EngineError, InUse, InvalidValue
from ...models import NO_NETWORK
from ...network import isolation
from . import net
from .config import config_entries, render_config, write_config
from .connection import NAME_RE, LxcConnection
from .convert import to_network
from .rootfs import Layers
from .tools import RUNNING, Paths

if TYPE_CHECKING:
    from ...models import ContainerSpec
    from ...network import Network, NetworkSpec
    from .idmap import IdMap


class LxcNetworks(LxcConnection):
    @classmethod
    def validate_network_spec(cls, spec: NetworkSpec) -> None:
        from ...network.spec import check_creatable_name

        check_creatable_name(spec.name)

    def network_create(self, spec: NetworkSpec) -> Network:
        """Make the bridge (with the gateway address), install the host rules, then write
        the record; on failure all three are undone."""
        from ...network import host_lock, netfilter

        if not spec.resolved or spec.bridge is None or spec.gateway is None:
            raise ValueError(f"network_create needs a resolved spec, got {spec}")
        self.validate_network_spec(spec)
        with host_lock():
            if self.net_records.find(spec.name) is not None:
                raise Conflict(f"network {spec.name} already exists on lxc",
                               hint=f"remove it first: cman network rm lxc:{spec.name}")
            if netfilter.link_exists(spec.bridge):
                raise Conflict(f"interface {spec.bridge} already exists on this host",
                               hint="choose another --bridge, or remove that interface")
            record = net.new_record(spec)
            try:
                self._make_bridge(spec.name, spec.bridge, spec.gateway, spec.prefixlen)
                netfilter.ensure_bridge_rules(spec.name, spec.bridge, icc=spec.icc)
                self.net_records.save(record)
            except BaseException:
                with contextlib.suppress(CmanError, OSError):
                    self.net_records.delete(spec.name)
                with contextlib.suppress(CmanError):
                    netfilter.remove_rules(spec.name, spec.bridge)
                with contextlib.suppress(CmanError):
                    netfilter.delete_link(spec.bridge)
                raise
        return self._network(record, detail=True)

    def networks(self) -> list[Network]:
        """The networks cman recorded in this LXC path (raw LXC has no others)."""
        return [self._network(r) for r in self.net_records.all()]

    def network_inspect(self, name: str) -> Network:
        return self._network(self.net_records.get(name), detail=True)

    def network_remove(self, name: str, *, force: bool = False) -> None:
        """Refused while containers are on it, unless ``force``: then each one keeps
        everything but its network (config ``lxc.net.0.type = empty``, veth deleted if it
        runs). Then the bridge, the host rules and the record (with its allocations) go."""
        from ...network import host_lock, netfilter

        with host_lock():
            record = self.net_records.get(name)
            users = sorted(net.live_allocations(record, self._on_network(name)))
            if users and not force:
                raise InUse.network(name, "lxc", users)
            bridge = str(record.get("bridge") or "")
            for container in users:
                self._detach(container, name, bridge)
            if bridge:
                netfilter.delete_link(bridge)
                netfilter.remove_rules(name, bridge)
            self.net_records.delete(name)

    def _make_bridge(self, network: str, bridge: str, gateway: str, prefixlen: int) -> None:
        """The network's bridge, marked as this LXC path's (:func:`.net.bridge_mark`) in the same
        step, so ``prune_leftovers`` can tell a bridge a killed ``network create`` left from
        anyone else's. ``ip link add`` ignores ``alias``, so the mark is a second command; both
        go to one ``ip -batch`` process, which finishes them even when cman is killed meanwhile
        (its input is one write, well under the pipe's atomic size: it gets both lines or none)."""
        from ...network import netfilter

        mark = net.bridge_mark(self.lxcpath, network)
        if any(c.isspace() or c in "\"'\\#" for c in bridge + mark):
            raise EngineError(f"cannot name bridge {bridge!r} for network {network!r}")  # validated before
        lines = [] if netfilter.link_exists(bridge) else [f"link add name {bridge} type bridge"]
        lines.append(f"link set dev {bridge} alias {mark}")
        _proc.run([netfilter.need_tool("ip", "iproute2"), "-batch", "-"], input="\n".join(lines) + "\n",
                  timeout=30, backend="host")
        netfilter.create_bridge(bridge, gateway, prefixlen)

    def _network(self, record: dict[str, Any], *, detail: bool = False) -> Network:
        name = str(record["name"])
        containers = sorted(net.live_allocations(record, self._on_network(name)))
        extra: dict[str, Any] = {"record": str(self.net_records.path(name))}
        if detail:
            from ...network import isolation, netfilter

            bridge = str(record.get("bridge") or "")
            extra.update(
                allocations=net.live_allocations(record, self._on_network(name)),
                bridge_present=netfilter.link_exists(bridge),
                host_rules=[str(r) for r in netfilter.list_rules(name, bridge or None)],
                isolated_ports=sorted(p for p, iso in isolation.bridge_ports(bridge).items() if iso),
            )
        return to_network(record, containers, extra)

    def _on_network(self, network: str) -> Callable[[str], bool]:
        """Is a container (by name) still there and still on ``network``? Judges allocations."""
        def alive(container: str) -> bool:
            if not NAME_RE.fullmatch(container):
                return False
            paths = self._paths(container)
            return paths.config.is_file() and self._meta(paths).get("network") == network

        return alive

    # -- a container on a network --------------------------------------------------------------

    def _check_network_options(self, spec: ContainerSpec) -> dict[str, Any] | None:
        """Check the spec's network options before any work; the record of the network to join, if any."""
        from ...network import check_container_ip, check_dns_servers, check_network_name, check_search_domains

        check_dns_servers(spec.dns)
        check_search_domains(spec.dns_search)  # they go into a file: no line may sneak in
        network = spec.network if spec.network != NO_NETWORK else None
        if spec.ip is not None and network is None:
            raise InvalidValue("--ip", spec.ip, "needs --network NAME (a network with a subnet)")
        if network is None:
            return None
        check_network_name(network)
        record = self.net_records.get(network)
        if spec.ip is not None:
            check_container_ip(to_network(record), spec.ip)
        return record

    def _join_network(self, paths: Paths, spec: ContainerSpec, image: dict[str, Any],
                      limits: list[tuple[str, str]], network: str, idmap: IdMap | None,
                      lower: Path | None = None) -> None:
        """Allocate the container's address, then write its network config, resolv.conf and
        the network's record, all under the network lock; on failure nothing stays allocated."""
        from ...network import check_container_ip, host_lock

        with host_lock():
            record = self.net_records.get(network)  # it may have gone meanwhile
            network_now = to_network(record)
            if spec.ip is not None:
                check_container_ip(network_now, spec.ip)
            address = net.allocate(record, paths.name, spec.ip, self._on_network(network))
            config = render_config(config_entries(paths, spec, image, limits, network_now, address, idmap=idmap,
                                                  lower=lower))
            if not network_now.icc:
                isolation.write_hook(paths.dir / net.HOOK_NAME)
            net.write_dns(Layers(paths.rootfs, lower), network_now, spec, owner=idmap.root if idmap else None)
            meta = self._meta(paths)
            meta.update(network=network, ip=address)
            _files.write_json(paths.meta, meta, mode=0o600)
            self.net_records.save(record)
            try:
                write_config(paths, config)
            except BaseException:
                with contextlib.suppress(CmanError, OSError):
                    self._release_address(paths.name, network)
                raise

    def _release_address(self, container: str, network: str) -> None:
        from ...network import host_lock

        with host_lock():
            record = self.net_records.find(network)
            if record is not None and net.release(record, container, self._on_network(network)):
                self.net_records.save(record)

    def _network_up(self, paths: Paths) -> Network | None:
        """The container's network, its bridge and host rules made again if the bridge is
        missing (after a reboot nothing of the host side survives); None without one."""
        name = self._meta(paths).get("network")
        record = self.net_records.find(str(name)) if name else None
        if record is None:
            return None  # no network, or its record went by hand: lxc-start says what is missing
        network = to_network(record)
        from ...network import netfilter

        if network.bridge and network.gateway and network.subnet and not netfilter.link_exists(network.bridge):
            from ...network import host_lock

            with host_lock():
                if not netfilter.link_exists(network.bridge):
                    self._make_bridge(network.name, network.bridge, network.gateway,
                                      int(network.subnet.rpartition("/")[2]))
                    netfilter.ensure_bridge_rules(network.name, network.bridge, icc=network.icc)
        hook = paths.dir / net.HOOK_NAME
        if not network.icc and not hook.exists():  # LXC refuses to start without it
            isolation.write_hook(hook)
        return network

    def _isolate(self, paths: Paths, pid: int, network: Network) -> None:
        """No ICC: make sure the container's bridge port is isolated (the start hook did it
        already; this checks it and covers a config written by hand). If that cannot be
        done the container is killed: it must not run with less isolation than promised."""
        from ...network import isolation

        assert network.bridge

        def stop() -> None:
            self._tool("lxc-stop", "-n", paths.name, "-k", timeout=60, check=False)
            with contextlib.suppress(OSError):
                self._update_state(paths, finished=now_iso())

        isolation.enforce("lxc", paths.name, pid, [isolation.Port(network.name, network.bridge)], stop=stop)

    def _detach(self, container: str, network: str, bridge: str) -> None:
        """Take ``container`` off ``network`` for good, keeping the container (under host_lock)."""
        from ...network import isolation, netfilter

        paths = self._paths(container)
        with _files.locked(self._lock_path):
            if not paths.config.is_file():
                return
            write_config(paths, net.detach_config(paths.config.read_text()))
            (paths.dir / net.HOOK_NAME).unlink(missing_ok=True)
            meta = self._meta(paths)
            if meta.get("network") == network:
                meta.update(network=None, ip=None)
                _files.write_json(paths.meta, meta)
            st, pid = self._info(paths)
            if st in RUNNING and pid is not None and bridge:
                with contextlib.suppress(CmanError):
                    netfilter.delete_link(isolation.container_port(pid, bridge))
