"""Docker backend: the Engine API, through the local socket, ssh, or the docker SDK.

Honours DOCKER_HOST like the docker CLI: tcp:// (with DOCKER_TLS_VERIFY and
DOCKER_CERT_PATH) goes through the docker SDK's APIClient; the local unix
socket, and ssh:// (``ssh HOST docker system dial-stdio``, as the docker CLI
does it), go through a small stdlib client, because importing the SDK
(``requests``) costs more than a whole ``docker run``.

- :mod:`.endpoint`: DOCKER_HOST, the local socket, reachability, locality, probe.
- :mod:`.api`: the transports, which all speak versioned Engine API paths (negotiated as
  the docker CLI does).
- :mod:`.connection`: :class:`DockerConnection`, the transport and the error boundary.
- :mod:`.refs`: what may go into an Engine API path (names, references, IDs).
- :mod:`.convert`: Engine API records -> cman models.
- :mod:`.containers`, :mod:`.images`, :mod:`.networks`: the verbs, one mixin each;
  :mod:`.imports` and :mod:`.export`: an image from a tarball with its config, and back;
  :mod:`.leftovers`: what a killed cman left (``system prune``).
- :mod:`.l2`: the nftables bridge rules that close layer 2 on no-ICC networks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._sys.lazy import lazy_attributes

if TYPE_CHECKING:
    from .backend import DockerBackend

__all__ = ["DockerBackend"]
__getattr__ = lazy_attributes(__name__, {"DockerBackend": "backend"})  # the class on first use: `.endpoint` stays cheap
