"""LXD ``image_export``: an image's root filesystem as one plain rootfs tarball.

``GET /1.0/images/FINGERPRINT/export`` returns a unified image (one tarball holding
``metadata.yaml`` and ``rootfs/``: what ``cman image import`` makes) as it is stored; its
``rootfs/`` is rewritten as a plain tarball while it streams (:mod:`cman._sys.tarballs`). A
split image (metadata tarball + squashfs rootfs, as image servers publish them) comes back
as multipart and is refused (Unsupported) rather than guessed at.
"""

from __future__ import annotations

from pathlib import Path

from ..._sys import tarballs
from ...errors import Unsupported
from .connection import _boundary
from .images import LxdImages


class LxdExport(LxdImages):
    def image_export(self, ref: str, dest: Path) -> Path:
        with _boundary(image=ref, action="export"):
            raw = self._image_raw(ref)
            fingerprint = str(raw["fingerprint"])
            response = self.client.api.images[fingerprint].export.get(stream=True, is_api=False, timeout=None)
            try:
                kind = response.headers.get("Content-Type", "")
                if kind.startswith("multipart/"):
                    raise Unsupported("lxd", "image export of a split image (metadata + squashfs rootfs)",
                                      "only unified images (made by `cman image import`) can be exported")
                response.raw.decode_content = True
                return tarballs.strip_prefix(response.raw, dest)
            finally:
                response.close()
