"""Registry (OCI) images for raw LXC: ``pull REGISTRY/REPO:TAG``, and short Docker Hub names
when a registry mirror is configured.

Which references are registry images, in this order (the first that applies wins):

1. ``template:NAME`` and ``download:DIST/RELEASE`` are LXC templates, never a registry;
2. a reference whose first component is a registry (has '.' or ':', or is ``localhost``)
   is a registry image, and a malformed one is InvalidName (exit 2) before anything runs;
3. a name already in cman's LXC store is that image (``cman image import`` names);
4. with a registry mirror configured (:mod:`cman.config`), a name without '/' (``debian``,
   ``busybox:1.36``) is the Docker Hub image ``library/NAME``, pulled from the mirror;
5. otherwise the LXC ways: the short-name map (:mod:`cman.images`), ``DIST/RELEASE[/ARCH]``.

A pull copies the image into the host's OCI layout (:mod:`cman.oci.layout`), unpacks it and
stores its rootfs in cman's LXC store under the canonical reference, with its config. A
re-pull whose manifest digest is the one stored does nothing more.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ... import config as _config
from ...oci import imageconfig
from ...oci.refs import Reference, names_registry, parse, registry_image
from ...validate import check_config_value
from .connection import LxcConnection

if TYPE_CHECKING:
    from ...models import PullProgress


def oci_reference(ref: str, in_store: Callable[[], bool]) -> Reference | None:
    """The registry image ``ref`` names (:func:`cman.oci.refs.registry_image`); LXC's own
    ``template:`` and ``download:`` forms never are."""
    if ref.startswith(("template:", "download:")):
        return None
    return registry_image(ref, is_local=in_store, mirrored=lambda: bool(_config.load().registry_mirrors))


def validate_image_ref(ref: str) -> None:
    """What LXC could never take: a value its config files cannot hold, a malformed registry
    reference, or a name no store image can have (templates are checked on pull)."""
    from .store import validate_alias

    check_config_value("image", ref)
    if ref.startswith(("template:", "download:")):
        return
    if names_registry(ref):
        parse(ref)
        return
    validate_alias(ref)


class LxcOciImages(LxcConnection):
    def layout_user(self) -> str | None:
        return f"lxc:{self.store.root}"

    @classmethod
    def validate_image_ref(cls, ref: str) -> None:
        validate_image_ref(ref)

    def _pull_oci(self, ref: Reference) -> Iterator[PullProgress]:
        """Fetch (only new layers), then unpack and store unless the stored image has the
        same manifest; the layout's tag is in use until then (:func:`layout.in_use`)."""
        from ...oci import layout  # hashlib and the registry client: for a pull only, not for `ps`

        with layout.in_use():
            yield from self._fetch_and_store(ref)

    def _fetch_and_store(self, ref: Reference) -> Iterator[PullProgress]:
        from ...models import PullProgress
        from ...oci import layout

        fetched = yield from layout.fetch(ref, _config.load(), "lxc", user=self.layout_user())
        alias = ref.canonical
        current = self.store.find(alias)
        if current is not None and (current.get("source") or {}).get("manifest") == fetched.manifest:
            yield PullProgress(None, f"{alias}: image is up to date ({fetched.manifest[:19]})")
            return
        work = layout.new_workdir()
        try:
            yield PullProgress(None, "unpacking")
            rootfs = layout.unpack(fetched, work, "lxc")
            config = imageconfig.resolve(fetched.config, rootfs)
            stage = self.store.new_workdir()
            try:
                tarball = layout.pack(rootfs, stage / "src.tar", "lxc")
                layout.remove(work)
                sha, staged, scan = self.store.stage(tarball, stage, move=True)
                with self.store.lock():
                    meta = self.store.commit(
                        stage, sha, staged, scan, alias=alias,
                        source={"kind": "oci", "ref": alias, "from": fetched.source, "manifest": fetched.manifest},
                        image_config=imageconfig.stored(config),
                    )
            except BaseException:
                shutil.rmtree(stage, ignore_errors=True)
                raise
        finally:
            layout.remove(work)
        yield PullProgress(None, f"stored image {str(meta['id'])[:19]} as {alias}")
