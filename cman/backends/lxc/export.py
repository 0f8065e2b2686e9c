"""LXC ``image_export``: the image's tarball from cman's store (:mod:`.store`), as a plain
rootfs tarball: copied as it is, or with its ``rootfs/`` prefix taken off when it was imported
as a unified (LXD-style) tarball."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..._sys import tarballs
from .images import LxcImages


class LxcExport(LxcImages):
    def image_export(self, ref: str, dest: Path) -> Path:
        with self.store.lock():  # the tarball cannot go while it is read
            meta = self.store.get(ref)
            src = self.store.tarball_of(meta)
            if meta.get("rootfs_prefix"):
                with open(src, "rb") as fh:
                    return tarballs.strip_prefix(fh, dest)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
        return dest
