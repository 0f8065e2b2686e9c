"""What ``cman provision docker-host`` is asked for, validated before any engine call."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dockerd.settings import DaemonSettings, merge, render
from ..errors import InvalidValue, UsageError
from ..models import _Jsonable

DAEMON_JSON = "/etc/docker/daemon.json"
CHECK_WORDS = "cman-docker-host-ok"
"""What the inner ``docker run`` prints when the host works."""
PACKAGES = ("docker.io", "cgroupfs-mount", "iproute2", "procps", "openssh-server")
"""Installed into cman's docker-host image (debootstrap ``--include``), or with apt into a Debian image
that lacks Docker: dockerd and runc, the cgroup mounts at boot, and sshd for ``--ssh``."""
FLAVOUR = "docker"
"""The image's name and cache word: ``debian-docker:RELEASE``."""


@dataclass(frozen=True)
class HostSpec(_Jsonable):
    name: str
    image: str | None = None
    """None: cman's Debian image with Docker (:data:`PACKAGES`), bootstrapped once and cached."""
    registry_mirrors: tuple[str, ...] = ()
    insecure_registries: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    icc: bool | None = None
    network: str | None = None
    ssh: bool = False
    ssh_key: Path | None = None
    check_image: str = "busybox"
    profiles: tuple[str, ...] = ("docker-host",)
    settings: DaemonSettings = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from ..oci.refs import check_image

        settings = DaemonSettings(
            dns=self.dns or None, icc=self.icc, registry_mirrors=self.registry_mirrors or None,
            insecure_registries=self.insecure_registries or None)
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "dns", tuple(settings.dns or ()))
        check_image(self.check_image)
        if self.ssh_key is not None and not self.ssh:
            raise UsageError("--ssh-key goes with --ssh")

    def daemon_json(self, current: bytes | None) -> tuple[dict[str, Any], bytes] | None:
        """The file to write over ``current`` (its other keys kept), or None when it is right."""
        if current is None and not self.settings.values():
            return None
        try:
            data = json.loads(current) if current and current.strip() else {}
        except ValueError as err:
            raise InvalidValue(DAEMON_JSON, "in the container", f"is not valid JSON ({err}): fix or remove it") from None
        if not isinstance(data, dict):
            raise InvalidValue(DAEMON_JSON, "in the container", "must hold a JSON object: fix or remove it")
        merged = merge(data, self.settings)
        if current is not None and merged == data:
            return None
        return merged, render(merged).encode()

    def public_key(self) -> bytes:
        """The SSH public key to authorize for root: ``ssh_key``, else the caller's own."""
        candidates = [self.ssh_key] if self.ssh_key else [Path.home() / ".ssh" / f"id_{kind}.pub"
                                                           for kind in ("ed25519", "ecdsa", "rsa")]
        for path in candidates:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            line = data.strip().split(b"\n")[0]
            if not line.startswith((b"ssh-", b"ecdsa-", b"sk-")) or b"PRIVATE KEY" in data:
                raise InvalidValue("--ssh-key", str(path), "is not an OpenSSH public key (.pub)")
            return line + b"\n"
        where = str(self.ssh_key) if self.ssh_key else "~/.ssh/id_{ed25519,ecdsa,rsa}.pub"
        raise UsageError(f"--ssh: no public key at {where}", hint="give --ssh-key FILE.pub (or ssh-keygen first)")
