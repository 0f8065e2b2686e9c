"""cman networks, the same on every backend: a bridge with a subnet and gateway, DNS, and ICC on or off.

The package is policy only; it never calls a backend (the verbs that do are
:func:`cman.lifecycle.create_network` and :func:`cman.lifecycle.remove_network`).

- :mod:`.spec`: what the user asks for (:class:`NetworkSpec`, validated on construction)
  and what exists (:class:`Network`), and how they differ;
- :mod:`.host`: the host's routes and links, free subnets, and the network lock;
- :mod:`.alloc`: the one address allocator (LXD and LXC);
- :mod:`.isolation`: no-ICC on the host side (bridge port isolation), for every backend;
- :mod:`.netfilter`: cman's DOCKER-USER rules and the bridges cman makes itself.

The names most callers need are importable from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host import HostNet, HostRoute, host_lock, read_host, resolve
    from .spec import (
        NAME_RE,
        Network,
        NetworkSpec,
        NetworkSpecConflict,
        check_container_ip,
        check_dns_servers,
        check_ifname,
        check_network_name,
        check_search_domains,
        container_dns,
        default_bridge_name,
        parse_host_address,
        parse_subnet,
        render_resolv_conf,
        spec_diff,
        spec_from_labels,
    )

_HOST = frozenset({"HostNet", "HostRoute", "host_lock", "read_host", "resolve"})


def __getattr__(name: str) -> Any:
    """Load a submodule only when one of its names is asked for: an engine that needs the
    spec (``from cman.network.spec import ...``) does not pay for the host module."""
    import importlib

    if name not in __all__:
        raise AttributeError(f"module 'cman.network' has no attribute {name!r}")
    return getattr(importlib.import_module(".host" if name in _HOST else ".spec", __name__), name)


__all__ = [
    "NAME_RE",
    "HostNet",
    "HostRoute",
    "Network",
    "NetworkSpec",
    "NetworkSpecConflict",
    "check_container_ip",
    "check_dns_servers",
    "check_ifname",
    "check_network_name",
    "check_search_domains",
    "container_dns",
    "default_bridge_name",
    "host_lock",
    "parse_host_address",
    "parse_subnet",
    "read_host",
    "render_resolv_conf",
    "resolve",
    "spec_diff",
    "spec_from_labels",
]
