"""Docker networks: cman networks are Docker bridge networks with cman's labels.

Docker writes its own FORWARD rules for its bridges (ICC accept or drop), so cman
adds no DOCKER-USER rule of its own. What Docker's enable_icc=false leaves open (layer
2) cman closes with nftables bridge rules installed with the network (:mod:`.l2`), and
per container after each start through cman (see :mod:`.containers`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any

from ..._sys.retry import idempotent
from ...errors import CmanError, Conflict, InUse, InvalidName, NetworkNotFound
from ...models import MANAGED_LABEL
from . import refs
from .api import ApiError
from .connection import DockerConnection, boundary, is_transient
from .convert import BRIDGE_NAME_OPT, ICC_OPT, container_name, network_from_raw

if TYPE_CHECKING:
    from ...network import Network, NetworkSpec

BUILTIN_NETWORKS = frozenset({"bridge", "host", "none", "default"})
"""Docker's predefined network modes: no cman network may take their names."""


class DockerNetworks(DockerConnection):
    @classmethod
    def validate_network_spec(cls, spec: NetworkSpec) -> None:
        if spec.name in BUILTIN_NETWORKS:
            raise InvalidName(f"invalid network name {spec.name!r}", hint="it is one of Docker's predefined networks")

    def _net_call(self, method: str, path: str, *, name: str, action: str, params: dict[str, Any] | None = None,
                  body: Any = None, kind: type | None = None) -> Any:
        """An Engine API call about a network: 404 is NetworkNotFound, 409 a Conflict about it."""
        with boundary(action=action):
            try:
                return self.api.call(method, path, params=params, body=body, kind=kind)
            except ApiError as err:
                if err.status == 404:
                    raise NetworkNotFound(name, "docker") from err
                if err.status in (403, 409):
                    raise Conflict(f"docker {action} {name}: {err.message}") from err
                raise

    def network_create(self, spec: NetworkSpec) -> Network:
        if not spec.resolved:
            raise ValueError(f"network_create needs a resolved spec, got {spec}")
        body = {
            "Name": spec.name,
            "CheckDuplicate": True,
            "Driver": "bridge",
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": spec.subnet, "Gateway": spec.gateway}]},
            "Options": {BRIDGE_NAME_OPT: spec.bridge, ICC_OPT: "true" if spec.icc else "false"},
            "Labels": {MANAGED_LABEL: "true", **spec.labels()},
        }
        created = self._net_call("POST", "/networks/create", name=spec.name, action="network create", body=body,
                                 kind=dict)
        with boundary(action="network create"):
            net_id = refs.engine_id(created.get("Id"))
        if not spec.icc and self.locality().local:
            self._install_l2(spec.name, str(spec.subnet), net_id)
        return self.network_inspect(net_id)

    def _install_l2(self, name: str, subnet: str, net_id: str) -> None:
        """The no-ICC network's layer-2 rules (:mod:`.l2`); without them the network goes again."""
        from . import l2

        try:
            l2.ensure(name, subnet)
        except BaseException:
            with contextlib.suppress(CmanError):
                self._net_call("DELETE", f"/networks/{net_id}", name=name, action="network rm")
            with contextlib.suppress(CmanError):
                l2.remove(name)
            raise

    @idempotent(is_transient)
    def networks(self) -> list[Network]:
        raw = self._call("GET", "/networks", params={"filters": {"driver": ["bridge"]}}, action="list networks",
                         kind=list)
        # By network name: a created, never started container has no NetworkID yet.
        attached: dict[str, list[str]] = {}
        for c in self._call("GET", "/containers/json", params={"all": True}, action="list containers", kind=list):
            for net_name in (c.get("NetworkSettings") or {}).get("Networks") or {}:
                attached.setdefault(net_name, []).append(container_name(c))
        return sorted((network_from_raw(r, attached.get(r["Name"], [])) for r in raw), key=lambda n: n.name)

    @idempotent(is_transient)
    def network_inspect(self, name: str) -> Network:
        return self._network(name, detail=True)

    def _network(self, name: str, *, detail: bool = False) -> Network:
        """The network; with ``detail`` also its containers (running or not) and cman's host rules."""
        raw = self._net_call("GET", f"/networks/{refs.network(name)}", name=name, action="network inspect", kind=dict)
        if raw.get("Driver") != "bridge":
            raise NetworkNotFound(name, "docker")
        if not detail:
            return network_from_raw(raw, sorted(c.get("Name", "") for c in (raw.get("Containers") or {}).values()))
        # By name: the filter matches a created, never started container only by name.
        users = self._call("GET", "/containers/json", params={"all": True, "filters": {"network": [raw["Name"]]}},
                           action="list containers", kind=list)
        net = network_from_raw(raw, sorted(container_name(c) for c in users))
        if net.managed and net.bridge and self.locality().local:
            from ...network import isolation, netfilter
            from . import l2

            extra = {
                **net.extra,
                "host_rules": [*(str(r) for r in netfilter.list_rules(net.name)), *(str(r) for r in l2.listed(net.name))],
                "isolated_ports": sorted(p for p, iso in isolation.bridge_ports(net.bridge).items() if iso),
            }
            net = dataclasses.replace(net, extra=extra)
        return net

    def network_remove(self, name: str, *, force: bool = False) -> None:
        net = self.network_inspect(name)
        if net.containers and not force:
            raise InUse.network(name, "docker", net.containers)
        with boundary(action="network rm"):
            net_id = refs.engine_id(net.id)
        for container in net.containers:
            with contextlib.suppress(NetworkNotFound):
                self._net_call("POST", f"/networks/{net_id}/disconnect", name=name, action="network disconnect",
                               body={"Container": container, "Force": True})
        self._net_call("DELETE", f"/networks/{net_id}", name=name, action="network rm")
        if net.managed and self.locality().local:
            from ...network import netfilter
            from . import l2

            netfilter.remove_rules(net.name, net.bridge)
            l2.remove(net.name)
