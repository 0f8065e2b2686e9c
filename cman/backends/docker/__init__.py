"""Docker backend: the Engine API, through the local socket, ssh, or the docker SDK.

Honours DOCKER_HOST like the docker CLI: tcp:// (with DOCKER_TLS_VERIFY and
DOCKER_CERT_PATH) goes through the docker SDK's APIClient; the local unix
socket, and ssh:// (``ssh HOST docker system dial-stdio``, as the docker CLI
does it), go through a small stdlib client, because importing the SDK
(``requests``) costs more than a whole ``docker run``.

- :mod:`.endpoint`: DOCKER_HOST, the local socket, reachability, locality, probe.
- :mod:`.api`: the transports, which all speak raw Engine API paths.
- :mod:`.connection`: :class:`DockerConnection`, the transport and the error boundary.
- :mod:`.convert`: Engine API records -> cman models.
- :mod:`.containers`, :mod:`.images`, :mod:`.networks`: the verbs, one mixin each.
"""

from __future__ import annotations

from ..base import Feature
from .containers import DockerContainers
from .images import DockerImages
from .networks import DockerNetworks


class DockerBackend(DockerContainers, DockerImages, DockerNetworks):
    name = "docker"
    capabilities = frozenset(Feature)


__all__ = ["DockerBackend"]
