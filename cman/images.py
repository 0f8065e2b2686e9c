"""Images, backend-neutral: the short-name map and what a rootfs says about itself.

**Short names.** ``cman run debian:12`` means the same system on every engine: Docker
Hub's ``debian:12``, LXD's ``images:debian/12``, raw LXC's ``download:debian/bookworm``.
:data:`SHORT_NAMES` is that table, once; each engine's column can be extended or
overridden with a JSON object in ``$CMAN_LXD_IMAGE_MAP`` / ``$CMAN_LXC_IMAGE_MAP``.
Docker's column is the name itself (Docker Hub's names are the short names).

**Architecture.** What an image runs on is read from the rootfs itself, the ELF
header of a well-known binary (:func:`elf_architecture`), as the kernel would see
it; the host's architecture is only the fallback for a rootfs with no binary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from .errors import InvalidValue

# -- short names -------------------------------------------------------------------------------

SHORT_NAMES: Mapping[str, Mapping[str, str]] = {
    "ubuntu": {"lxd": "images:ubuntu/22.04", "lxc": "download:ubuntu/jammy"},
    "ubuntu:latest": {"lxd": "images:ubuntu/22.04", "lxc": "download:ubuntu/jammy"},
    "ubuntu:20.04": {"lxd": "images:ubuntu/20.04", "lxc": "download:ubuntu/focal"},
    "ubuntu:22.04": {"lxd": "images:ubuntu/22.04", "lxc": "download:ubuntu/jammy"},
    "ubuntu:24.04": {"lxd": "images:ubuntu/24.04", "lxc": "download:ubuntu/noble"},
    "ubuntu:focal": {"lxd": "images:ubuntu/focal", "lxc": "download:ubuntu/focal"},
    "ubuntu:jammy": {"lxd": "images:ubuntu/jammy", "lxc": "download:ubuntu/jammy"},
    "ubuntu:noble": {"lxd": "images:ubuntu/noble", "lxc": "download:ubuntu/noble"},
    "debian": {"lxd": "images:debian/12", "lxc": "download:debian/bookworm"},
    "debian:latest": {"lxd": "images:debian/12", "lxc": "download:debian/bookworm"},
    "debian:11": {"lxd": "images:debian/11", "lxc": "download:debian/bullseye"},
    "debian:12": {"lxd": "images:debian/12", "lxc": "download:debian/bookworm"},
    "debian:bullseye": {"lxd": "images:debian/bullseye", "lxc": "download:debian/bullseye"},
    "debian:bookworm": {"lxd": "images:debian/bookworm", "lxc": "download:debian/bookworm"},
    "alpine": {"lxd": "images:alpine/3.19", "lxc": "download:alpine/3.19"},
    "alpine:latest": {"lxd": "images:alpine/3.19", "lxc": "download:alpine/3.19"},
    "alpine:3.18": {"lxd": "images:alpine/3.18", "lxc": "download:alpine/3.18"},
    "alpine:3.19": {"lxd": "images:alpine/3.19", "lxc": "download:alpine/3.19"},
    "alpine:edge": {"lxd": "images:alpine/edge", "lxc": "download:alpine/edge"},
    "busybox": {"lxd": "images:busybox/1.36.1", "lxc": "template:busybox"},
    "fedora": {"lxd": "images:fedora/39", "lxc": "download:fedora/39"},
    "fedora:39": {"lxd": "images:fedora/39", "lxc": "download:fedora/39"},
    "archlinux": {"lxd": "images:archlinux", "lxc": "download:archlinux/current"},
    "rockylinux:9": {"lxd": "images:rockylinux/9", "lxc": "download:rockylinux/9"},
    "almalinux:9": {"lxd": "images:almalinux/9", "lxc": "download:almalinux/9"},
    "centos:9": {"lxd": "images:centos/9-Stream", "lxc": "download:centos/9-Stream"},
}
"""Docker-style short name -> each system-container engine's own source (README table)."""

MAP_ENV = {"lxd": "CMAN_LXD_IMAGE_MAP", "lxc": "CMAN_LXC_IMAGE_MAP"}
"""Per engine: a JSON object of short name -> source, added to (or replacing) the table."""


def env_mapping(var: str) -> dict[str, str]:
    """A JSON object of strings from the environment variable ``var`` ({} when unset)."""
    text = os.environ.get(var, "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as err:
        raise InvalidValue(f"${var}", text, f"not JSON ({err}); expected an object of name -> image source") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise InvalidValue(f"${var}", text, "expected a JSON object whose keys and values are strings")
    return data


def short_names(engine: str) -> dict[str, str]:
    """The short-name map of one engine: the table's column, then the engine's environment map."""
    column = {name: sources[engine] for name, sources in SHORT_NAMES.items() if engine in sources}
    var = MAP_ENV.get(engine)
    return {**column, **(env_mapping(var) if var else {})}


def expand(ref: str, engine: str) -> str:
    """A short name as ``engine``'s own reference; anything else unchanged."""
    return short_names(engine).get(ref, ref)


# -- architecture ------------------------------------------------------------------------------

ELF_MACHINES: Mapping[int, str] = {
    3: "i686", 8: "mips", 20: "ppc", 21: "ppc64le", 22: "s390x", 40: "armv7l", 62: "x86_64", 183: "aarch64",
    243: "riscv64",
}
"""ELF e_machine -> the kernel's name for the architecture (``uname -m``), which LXC and LXD use."""

ARCH_PROBES = ("bin/busybox", "sbin/init", "bin/sh", "bin/bash", "usr/bin/env", "bin/ls", "usr/bin/ls")
"""Files of a rootfs whose ELF header tells its architecture, in order of trust."""

DISTRO_ARCHES: Mapping[str, str] = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l", "ppc64el": "ppc64le",
                                    "i386": "i686"}
"""Debian's and the image servers' names -> the kernel's."""


def elf_architecture(head: bytes) -> str | None:
    """The architecture of an ELF file from its first 20 bytes; None when it is not ELF or unknown."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    number = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return ELF_MACHINES.get(number)


def normalize_arch(name: str | None) -> str | None:
    """``amd64`` -> ``x86_64``: one spelling for every engine."""
    return DISTRO_ARCHES.get(name or "", name) if name else None


def distro_arch(machine: str) -> str:
    """The image servers' name (``amd64``) for the kernel's (``x86_64``)."""
    return next((distro for distro, kernel in DISTRO_ARCHES.items() if kernel == machine), machine)


def host_architecture() -> str:
    """This machine's architecture (``uname -m``)."""
    return os.uname().machine
