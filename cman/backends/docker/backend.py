"""The DockerBackend class: the mixins of this package, one per concern, in one class
(the registry's ``cman.backends.docker.backend:DockerBackend``)."""

from __future__ import annotations

from ..base import Feature
from .containers import DockerContainers
from .export import DockerExport
from .imports import DockerImports
from .leftovers import DockerLeftovers
from .networks import DockerNetworks


class DockerBackend(DockerContainers, DockerImports, DockerExport, DockerNetworks, DockerLeftovers):
    name = "docker"
    capabilities = frozenset(Feature) - {Feature.NESTING, Feature.CLUSTER}
    """No NESTING: a container that runs Docker inside needs ``--privileged`` on Docker, which
    cman asks for only as ``--privileged`` (Docker-in-Docker), never as a side effect of nesting."""
