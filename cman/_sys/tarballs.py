"""Tar archives rewritten as a stream: a unified image (``metadata.yaml`` + ``rootfs/``) as a
plain rootfs tarball, which every engine's ``image_import`` takes (``image_export``)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import IO

from ..errors import EngineError


def strip_prefix(src: IO[bytes], dest: Path, prefix: str = "rootfs") -> Path:
    """Write the members below ``prefix/`` of the (possibly compressed) tar stream ``src`` to
    ``dest`` as an uncompressed tarball, names and hard-link targets relative to it; the rest
    (``metadata.yaml``, ``templates/``) is left out. Owners, modes and pax headers are kept."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(fileobj=src, mode="r|*") as tin, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tout:
            for member in tin:
                name = member.name.removeprefix("./")
                if not name.startswith(prefix + "/"):
                    continue
                member.name = name[len(prefix) + 1:]
                if not member.name:
                    continue
                if member.islnk():
                    member.linkname = member.linkname.removeprefix("./").removeprefix(prefix + "/")
                tout.addfile(member, tin.extractfile(member) if member.isfile() else None)
        os.replace(tmp, dest)
    except (tarfile.TarError, EOFError) as err:
        raise EngineError(f"cannot rewrite the image's archive: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return dest
