"""The LxcBackend class: the mixins of this package, one per concern, in one class
(the registry's ``cman.backends.lxc.backend:LxcBackend``)."""

from __future__ import annotations

from ..base import Feature
from .export import LxcExport
from .leftovers import LxcLeftovers


class LxcBackend(LxcLeftovers, LxcExport):
    """Raw LXC through the lxc-* tools. See the package docstring for the parts (the
    mixins: LxcLeftovers over LxcContainers, LxcImages and LxcNetworks; LxcExport)."""

    name = "lxc"
    # No daemon: no remote endpoint, and template pulls report no byte progress.
    capabilities = frozenset(Feature) - {Feature.PULL_PROGRESS, Feature.REMOTE, Feature.CLUSTER, Feature.API_CPU_STATS}
    system_containers = True
