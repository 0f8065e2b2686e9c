"""LXD image plumbing without the engine: references, the short-name map, unified tarballs.

Everything here is pure (files and strings), so it is unit-tested without LXD
(tests/unit/test_lxd_image.py).

Image references understood by the LXD backend, tried in this order:

1. a local alias (``cmantest-bb``, ``debian/12``, even ``images:debian/12`` once pulled),
2. a local fingerprint or a unique prefix of at least 8 hex digits,
3. a short name of :data:`cman.images.SHORT_NAMES` (``ubuntu``, ``debian:12`` ...), which
   stands for a remote reference,
4. ``REMOTE:ALIAS`` with REMOTE one of :data:`DEFAULT_REMOTES` (``images:debian/12``),
5. ``https://HOST[:PORT][/PATH]:ALIAS`` - a simplestreams image server by URL
   (``https://127.0.0.1:8443/streams:busybox``).

A pulled image gets the local alias of the canonical remote reference, e.g.
``images:debian/12``, so the next ``run debian:12`` finds it without pulling.

The short-name map is :mod:`cman.images`'s (``CMAN_LXD_IMAGE_MAP`` extends it);
``CMAN_LXD_REMOTES`` adds remotes
(``{"mirror": "https://10.201.0.1:8443"}``). ``CMAN_LXD_REMOTE_CERTS`` pins the certificate
of a server that no public CA vouches for (a self-signed mirror): remote name or server
URL -> a PEM file (``{"mirror": "/etc/cman/mirror.crt"}``); cman passes it to the daemon in
the pull's ``source.certificate``, and the daemon then trusts that certificate only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import images
from ...errors import InvalidName, InvalidValue

ENV_REMOTES = "CMAN_LXD_REMOTES"
ENV_REMOTE_CERTS = "CMAN_LXD_REMOTE_CERTS"
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?")

DEFAULT_REMOTES: Mapping[str, str] = {
    "images": "https://images.linuxcontainers.org",
    "ubuntu": "https://cloud-images.ubuntu.com/releases",
    "ubuntu-daily": "https://cloud-images.ubuntu.com/daily",
}
"""Remote name -> simplestreams server, as the ``lxc`` client ships them."""

_ALIAS_BAD = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_FINGERPRINT = re.compile(r"[0-9a-f]{8,64}")
_URL_REF = re.compile(r"(?P<server>https://[A-Za-z0-9.\-\[\]_]+(?::\d{1,5})?(?:/[!-9;-~]*)?):(?P<alias>[^\s]+)", re.ASCII)
"""``https://HOST[:PORT][/PATH]:ALIAS``: the server part is printable ASCII without ':' in the path."""


@dataclass(frozen=True)
class RemoteRef:
    """An image on an image server."""

    server: str
    """https URL of a simplestreams server."""
    alias: str
    """The image's alias (or fingerprint) on that server."""
    canonical: str
    """``REMOTE:ALIAS`` or ``URL:ALIAS``: the local alias a pulled image gets."""
    protocol: str = "simplestreams"
    certificate: str | None = None
    """The server's certificate (PEM) to pin, from ``$CMAN_LXD_REMOTE_CERTS``."""


SOURCE_PROPERTY = "cman.source"
"""The image property that says ``image import`` built the image (from which tarball)."""


def remotes() -> dict[str, str]:
    """Remote name -> server URL: defaults, then ``$CMAN_LXD_REMOTES``."""
    merged = {**DEFAULT_REMOTES, **images.env_mapping(ENV_REMOTES)}
    for name, url in merged.items():
        if not url.startswith("https://"):
            raise InvalidValue(ENV_REMOTES, f"{name}={url}", "a remote must be an https:// URL")
    return merged


def pinned_certificate(*keys: str) -> str | None:
    """The PEM certificate ``$CMAN_LXD_REMOTE_CERTS`` gives for the first of ``keys`` it names
    (a remote's name, its server URL); None when it names none."""
    paths = images.env_mapping(ENV_REMOTE_CERTS)
    for key in keys:
        path = paths.get(key) or paths.get(key.rstrip("/"))
        if not path:
            continue
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise InvalidValue(ENV_REMOTE_CERTS, f"{key}={path}", f"cannot read the certificate ({err})") from None
        m = _PEM.search(text)
        if m is None:
            raise InvalidValue(ENV_REMOTE_CERTS, f"{key}={path}", "not a PEM certificate")
        return m.group(0)
    return None


def check_alias(name: str, what: str = "image name") -> str:
    """LXD alias rules as cman applies them: 1-255 characters, no whitespace or
    control characters, no leading '-' (it would read as an option to ``lxc``)."""
    bad = (not name or len(name) > 255 or bool(_ALIAS_BAD.search(name)) or name.startswith("-")
           or any(part in (".", "..") for part in name.split("/")))  # an alias travels in a URL path
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not text that a URL or LXD can carry
        bad = True
    if bad:
        raise InvalidName(
            f"invalid {what} {name!r}",
            hint="use 1-255 characters without spaces or control characters, not starting with '-',"
            " with no '.' or '..' part (e.g. busybox or debian/12)",
        )
    return name


def looks_like_fingerprint(ref: str) -> bool:
    return bool(_FINGERPRINT.fullmatch(ref))


def parse_remote(ref: str) -> RemoteRef | None:
    """``images:debian/12`` or ``https://host:8443/path:alias`` -> RemoteRef; None for a local ref.

    Short names are not expanded here (see :func:`expand`).
    """
    if ref.startswith("https://"):
        m = _URL_REF.fullmatch(ref)
        if not m or m.group("alias").isdigit():
            raise InvalidName(
                f"invalid remote image reference {ref!r}",
                hint="write https://HOST[:PORT][/PATH]:ALIAS, e.g. https://127.0.0.1:8443:debian/12",
            )
        server = m.group("server").rstrip("/")
        alias = check_alias(m.group("alias"))
        return RemoteRef(server=server, alias=alias, canonical=f"{server}:{alias}",
                         certificate=pinned_certificate(server))
    if ref.startswith(("http://", "lxd://", "simplestreams://")):
        raise InvalidName(f"unsupported image server URL {ref!r}", hint="image servers are reached over https:// only")
    head, sep, tail = ref.partition(":")
    if not sep:
        return None
    known = remotes()
    if head not in known:
        return None
    if not tail:
        raise InvalidName(f"empty image alias in {ref!r}", hint=f"write {head}:ALIAS, e.g. images:debian/12")
    return RemoteRef(server=known[head], alias=check_alias(tail), canonical=f"{head}:{tail}",
                     certificate=pinned_certificate(head, known[head]))


def expand(ref: str) -> str:
    """Short name -> remote reference (``debian:12`` -> ``images:debian/12``); others unchanged."""
    return images.expand(ref, "lxd")


def _rootfs_member_name(name: str) -> str | None:
    """Path of a rootfs tarball member inside a unified image (``rootfs/...``); None for the root itself."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidValue("TARBALL", name, "member path escapes the root ('..')")
    if not parts:
        return None
    return "rootfs/" + "/".join(parts)


def _os_release(members: dict[str, bytes]) -> dict[str, str]:
    text = members.get("etc/os-release") or members.get("usr/lib/os-release") or b""
    out: dict[str, str] = {}
    for line in text.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip("\"'")
    return out


def metadata_yaml(
    *, architecture: str, creation_date: int, properties: Mapping[str, str], templates: Mapping[str, Any] | None = None
) -> bytes:
    """LXD's metadata.yaml. JSON is valid YAML, so no YAML library is needed."""
    doc: dict[str, Any] = {
        "architecture": architecture,
        "creation_date": creation_date,
        "properties": dict(properties),
        "templates": dict(templates or {}),
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class BuiltImage:
    path: Path
    fingerprint: str
    """sha256 of the file: what LXD uses as the image's fingerprint."""
    properties: Mapping[str, str]


def build_unified(tarball: Path, name: str, out_dir: Path | None = None, *,
                  properties: Mapping[str, str] | None = None) -> BuiltImage:
    """Repack a plain rootfs tarball (``.tar``, ``.tar.gz``, ``.tar.xz``, ...) as a unified LXD
    image: ``rootfs/`` + ``metadata.yaml``, in one streaming pass (members are copied,
    never unpacked to disk). ``metadata.yaml`` comes last because ``os`` and ``release``
    are read from the rootfs's ``/etc/os-release`` on the way; LXD finds it anywhere.

    Deterministic: the same tarball and name give the same bytes, so the same
    fingerprint (the creation date is the tarball's mtime). The caller removes
    ``result.path``. ``properties`` are added to (and override) the image's properties
    (a registry pull keeps the image's config and manifest digest there).
    """
    creation = int(tarball.stat().st_mtime)
    from .leftovers import TARBALL_PREFIX, own_tag

    # The name carries this process (PID and start time): `cman system prune` removes the
    # file once that process is gone without cleaning up (SIGKILL).
    fd, tmp = tempfile.mkstemp(prefix=f"{TARBALL_PREFIX}{own_tag()}-", suffix=".tar.gz", dir=out_dir)
    os.close(fd)
    out_path = Path(tmp)
    try:
        try:
            src = tarfile.open(tarball, mode="r|*")  # noqa: SIM115 - closed by the with below
        except (tarfile.TarError, OSError) as err:
            raise InvalidValue("TARBALL", str(tarball), f"not a readable tar archive ({err})") from None
        with src, open(out_path, "wb") as raw, gzip.GzipFile(
            filename="", fileobj=raw, mode="wb", compresslevel=1, mtime=0
        ) as gz, tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as out:
            try:
                small = _copy_members(src, out)
            except tarfile.TarError as err:
                raise InvalidValue("TARBALL", str(tarball), f"not a readable tar archive ({err})") from None
            release = _os_release(small)
            arch = next((a for p in images.ARCH_PROBES if (a := images.elf_architecture(small.get(p, b"")[:20]))),
                        images.host_architecture())
            properties = {
                "description": f"{name} (cman image import of {tarball.name})",
                "os": release.get("ID", "unknown"),
                "release": release.get("VERSION_ID", release.get("VERSION_CODENAME", "")),
                "architecture": arch,
                "name": name,
                SOURCE_PROPERTY: tarball.name,
                **(properties or {}),
            }
            meta = metadata_yaml(architecture=arch, creation_date=creation, properties=properties)
            info = tarfile.TarInfo("metadata.yaml")
            info.size, info.mode, info.mtime = len(meta), 0o644, creation
            out.addfile(info, io.BytesIO(meta))
        digest = hashlib.sha256()
        with open(out_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return BuiltImage(out_path, digest.hexdigest(), properties)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise


_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")


class _Rejoined(io.RawIOBase):
    """A member's stream whose first bytes were read already: those bytes, then the rest."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self.head = head
        self.rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        head, self.head = (self.head, b"") if size < 0 else (self.head[:size], self.head[size:])
        want = -1 if size < 0 else size - len(head)
        rest: bytes = self.rest.read(want) if want != 0 else b""
        return head + rest


def _copy_members(src: tarfile.TarFile, dst: tarfile.TarFile) -> dict[str, bytes]:
    """Copy every member under ``rootfs/``; return the small files we want to read."""
    small: dict[str, bytes] = {}
    root_added = False
    for member in src:
        new_name = _rootfs_member_name(member.name)
        if new_name is None:  # "." or "/": the root directory itself
            if member.isdir() and not root_added:
                member.name = "rootfs"
                dst.addfile(member)
                root_added = True
            continue
        if not root_added:
            root = tarfile.TarInfo("rootfs")
            root.type, root.mode, root.mtime = tarfile.DIRTYPE, 0o755, member.mtime
            dst.addfile(root)
            root_added = True
        key = new_name[len("rootfs/") :]
        member.name = new_name
        if member.islnk():
            member.linkname = _rootfs_member_name(member.linkname) or "rootfs"
        if not member.isfile():
            dst.addfile(member)
            continue
        data: Any = src.extractfile(member)
        if data is not None and ((key in _OS_RELEASE and member.size < 65536) or key in images.ARCH_PROBES):
            small[key] = data.read(65536) if key in _OS_RELEASE else data.read(20)
            data = _Rejoined(small[key], data)
        dst.addfile(member, data)
    return small
