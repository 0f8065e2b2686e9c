"""The LxdBackend class: the mixins of this package, one per concern, in one class
(the registry's ``cman.backends.lxd.backend:LxdBackend``)."""

from __future__ import annotations

from ..base import Feature
from .containers import LxdContainers
from .export import LxdExport
from .images import LxdImages
from .networks import LxdNetworks


class LxdBackend(LxdContainers, LxdExport, LxdImages, LxdNetworks):
    name = "lxd"
    system_containers = True
    capabilities = frozenset(Feature)
