"""Registry (OCI) images for LXD: ``pull REGISTRY/REPO:TAG``, and short Docker Hub names when
a registry mirror is configured.

Which references are registry images, in this order (the first that applies wins):

1. ``REMOTE:ALIAS`` with a known remote and ``https://...:ALIAS`` are LXD image servers;
2. a reference whose first component is a registry (has '.' or ':', or is ``localhost``)
   is a registry image; a malformed one is InvalidName (exit 2) before any engine call;
3. a local alias is that image;
4. with a registry mirror configured (:mod:`cman.config`), a name without '/' (``debian``,
   ``busybox:1.36``) is the Docker Hub image ``library/NAME``, pulled from the mirror;
5. otherwise the short-name map (``debian:12`` -> ``images:debian/12``).

The daemon has no registry client: cman copies the image into the host's OCI layout
(:mod:`cman.oci.layout`), unpacks it, builds a unified image from the rootfs
(:func:`.imagebuild.build_unified`) with the config and the manifest digest in image
properties, uploads it and gives it the canonical reference as alias. A re-pull whose
manifest digest is the stored one uploads nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ... import config as _config
from ...errors import ImageNotFound
from ...oci import imageconfig
from ...oci.refs import Reference, names_registry, parse, registry_image
from .connection import LxdConnection, _boundary
from .convert import OCI_CONFIG_PROPERTY, OCI_MANIFEST_PROPERTY

if TYPE_CHECKING:
    from ...models import PullProgress
    from .imagebuild import BuiltImage


def validate_image_ref(ref: str) -> None:
    """What LXD could never take, by the precedence above: a bad ``https://`` or ``REMOTE:``
    form, a malformed registry reference, or a name no alias can be."""
    from .imagebuild import check_alias, parse_remote

    if parse_remote(ref) is not None:
        return
    if names_registry(ref):
        parse(ref)
        return
    check_alias(ref, "image reference")


class LxdOciImages(LxdConnection):
    def layout_user(self) -> str | None:
        return f"lxd:{self.locality().endpoint}"

    @classmethod
    def validate_image_ref(cls, ref: str) -> None:
        validate_image_ref(ref)

    if TYPE_CHECKING:  # defined by LxdImages, which this mixin is a base of
        def _image_raw(self, ref: str) -> dict[str, Any]: ...
        def _upload_and_alias(self, built: BuiltImage, name: str) -> None: ...

    def _oci_reference(self, ref: str) -> Reference | None:
        from . import imagebuild

        if imagebuild.parse_remote(ref) is not None:
            return None
        def is_local() -> bool:
            try:
                self._image_raw(ref)
                return True
            except ImageNotFound:
                return False

        return registry_image(ref, is_local=is_local, mirrored=lambda: bool(_config.load().registry_mirrors))

    def _pull_oci(self, ref: Reference) -> Iterator[PullProgress]:
        """The layout's tag is in use until the image is uploaded (:func:`layout.in_use`)."""
        from ...oci import layout  # hashlib and the registry client: for a pull only, not for `ps`

        with layout.in_use():
            yield from self._fetch_and_upload(ref)

    def _fetch_and_upload(self, ref: Reference) -> Iterator[PullProgress]:
        from ...models import PullProgress
        from ...oci import layout
        from . import imagebuild

        fetched = yield from layout.fetch(ref, _config.load(), "lxd", user=self.layout_user())
        alias = imagebuild.check_alias(ref.canonical)
        try:
            props = self._image_raw(alias).get("properties") or {}
        except ImageNotFound:
            props = {}
        if props.get(OCI_MANIFEST_PROPERTY) == fetched.manifest:
            yield PullProgress(None, f"{alias}: image is up to date ({fetched.manifest[:19]})")
            return
        work = layout.new_workdir()
        try:
            yield PullProgress(None, "unpacking")
            rootfs = layout.unpack(fetched, work, "lxd")
            config = imageconfig.resolve(fetched.config, rootfs)
            tarball = layout.pack(rootfs, work / "rootfs.tar", "lxd")
            built = imagebuild.build_unified(tarball, alias, work, properties={
                "description": f"{alias} (cman pull from {fetched.source})",
                OCI_CONFIG_PROPERTY: json.dumps(imageconfig.stored(config), sort_keys=True),
                OCI_MANIFEST_PROPERTY: fetched.manifest,
            })
            yield PullProgress(None, "uploading to LXD")
            with _boundary(image=alias, action="pull"):
                self._upload_and_alias(built, alias)
        finally:
            layout.remove(work)
        yield PullProgress(None, f"stored image {built.fingerprint[:12]} as {alias}")
