"""Addresses for containers on a cman network: one allocator for every backend that hands them out.

Docker allocates its own (IPAM). On LXD and raw LXC cman does, under
:func:`cman.network.host.host_lock`, so two cman processes never hand out one
address twice; each backend only says which addresses are held (LXD: instance
config and live addresses; LXC: cman's record of the network).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from ..errors import Conflict


def allocate(network: str, subnet: str, gateway: str | None, holders: Mapping[str, str],
             requested: str | None = None) -> str:
    """``requested`` when it is free, else the first free host of ``subnet`` that is not the gateway.

    ``holders`` maps each address in use to the container that holds it.
    ``requested`` was checked with :func:`cman.network.spec.check_container_ip`.
    Raises Conflict when it is taken or the subnet is full.
    """
    if requested is not None:
        address = str(ipaddress.IPv4Address(requested))
        if address in holders:
            raise Conflict(f"address {address} on network {network} is in use by container {holders[address]}",
                           hint="choose another --ip, or leave --ip out and cman picks a free one")
        return address
    for host in ipaddress.IPv4Network(subnet).hosts():
        if str(host) != gateway and str(host) not in holders:
            return str(host)
    raise Conflict(f"network {network} has no free address left in {subnet}",
                   hint="remove containers from it, or use a network with a larger subnet")
