"""The Proxmox VE form of the docker-host profile: the one place its settings live in cman/pve.

The ``[pve]`` section of the ``docker-host`` profile (:mod:`cman.profiles`: shipped, or the
user's own of that name) decides ``features`` and ``unprivileged``; without one, the defaults
below hold (issue 12, point 2): ``features: nesting=1,keyctl=1``, ``unprivileged: 1``.
``fuse=1`` is added when fuse-overlayfs is chosen. Docker inside an unprivileged container needs
nesting (its own namespaces and /proc) and keyctl (runc's session keyrings); fuse lets
fuse-overlayfs mount where overlay2 cannot (ZFS older than 2.2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class PveDockerHost:
    """PVE container settings of a Docker host (only the keys the profile decides)."""

    features: tuple[tuple[str, str], ...] = (("nesting", "1"), ("keyctl", "1"))
    """In PVE's documented order (``nesting=1,keyctl=1``)."""
    fuse_feature: tuple[str, str] = ("fuse", "1")
    """Added to ``features`` when fuse-overlayfs is chosen."""
    unprivileged: bool = True
    storage_driver_fuse: str = "fuse-overlayfs"
    """daemon.json ``storage-driver`` when fuse-overlayfs is chosen."""

    def feature_items(self, *, fuse: bool) -> tuple[tuple[str, str], ...]:
        return self.features + ((self.fuse_feature,) if fuse else ())


DOCKER_HOST = PveDockerHost()


def docker_host() -> PveDockerHost:
    """The docker-host profile's PVE settings, from its ``[pve]`` section (validated by the
    profiles loader against PVE's ``features`` format) over :data:`DOCKER_HOST`."""
    from .. import profiles

    pve = profiles.load("docker-host").extras("pve")
    settings = DOCKER_HOST
    if "features" in pve:
        pairs = tuple(tuple(item.split("=", 1)) for item in str(pve["features"]).split(",") if "=" in item)
        settings = dataclasses.replace(settings, features=tuple((k, v) for k, v in pairs))
    if "unprivileged" in pve:
        settings = dataclasses.replace(settings, unprivileged=str(pve["unprivileged"]).lower() in ("1", "true"))
    return settings
