"""Image verbs of the LXC backend, over cman's own image store (:mod:`.store`).

An image is a rootfs tarball: imported (``cman image import``) or built by an LXC
template (``pull template:busybox``, or ``pull DIST/RELEASE[/ARCH]`` with the ``download``
template and an image server). A container's rootfs is an overlay over the image's rootfs
(shifted for the id map, for an unprivileged container: a cache in the image's folder,
:mod:`.rootfs`), or a copy of it; removal is refused while a container was made from it,
unless forced, and a forced removal keeps the layers containers stand on until the last of
them goes (:mod:`.layerusers`), so removing an image never breaks a container. Changes hold
the LXC path's lock, then the store's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ... import images
from ..._sys import files as _files
from ..._sys import proc as _proc
from ...errors import CmanError, EngineError, ImageNotFound, InUse, InvalidName, InvalidValue, Unsupported
from ...oci import imageconfig
from ...oci.refs import Reference
from ...validate import check_config_value
from .config import render_config
from .convert import created_by, to_image
from .ociimages import LxcOciImages, oci_reference
from .store import TEMPLATE_CONFIG_KEYS, validate_alias
from .tools import config_values, tool

if TYPE_CHECKING:
    from ...models import Image, ImageConfig, ImageLayer, PruneResult, PullProgress

ENV_DOWNLOAD_SERVER = "CMAN_LXC_DOWNLOAD_SERVER"
OFFLINE_TEMPLATES = frozenset({"busybox"})
"""Templates that build a rootfs from the host alone; others download (debootstrap, ...)."""


class LxcImages(LxcOciImages):
    def pull(self, ref: str) -> Iterator[PullProgress]:
        """``template:busybox`` builds an image with LXC's busybox template (offline);
        ``[download:]DIST/RELEASE[/ARCH]`` uses the ``download`` template, which needs an image
        server: set $CMAN_LXC_DOWNLOAD_SERVER (none is contacted otherwise). A name already in
        cman's store is up to date; a short name (``ubuntu``, ``debian:12``) maps through
        :mod:`cman.images`."""
        from ...models import PullProgress

        check_config_value("image", ref)
        oci_ref = self._oci_reference(ref)
        if oci_ref is not None:
            yield from self._pull_oci(oci_ref)
            return
        if self.store.find(ref) is None and (mapped := images.short_names("lxc").get(ref)):
            yield PullProgress(None, f"{ref} is {mapped}")
            ref = mapped
        kind, _, rest = ref.partition(":")
        if kind == "template":
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", rest):
                raise InvalidName(f"invalid template name in {ref!r}", hint="write template:busybox")
            if rest not in OFFLINE_TEMPLATES:
                raise Unsupported(
                    "lxc", f"pull {ref}",
                    "only template:busybox builds offline; make a rootfs tarball and `cman image import` it",
                )
            validate_alias(ref)
            yield from self._pull_template(ref, rest, [])
            return
        spec = rest if kind == "download" else ref
        parts = spec.split("/")
        if "/" in spec and 2 <= len(parts) <= 3 and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", p) for p in parts):
            server = os.environ.get(ENV_DOWNLOAD_SERVER)
            if not server:
                err = ImageNotFound(
                    ref, "lxc", "the download template needs an image server and none is reachable here;"
                    " nothing was sent",
                )
                err.hint = (f"use template:busybox, `cman image import TARBALL NAME`, or set {ENV_DOWNLOAD_SERVER}"
                            " to a mirror you can reach")
                raise err
            check_config_value(ENV_DOWNLOAD_SERVER, server)
            arch = parts[2] if len(parts) == 3 else images.distro_arch(images.host_architecture())
            args = ["--server", server, "-d", parts[0], "-r", parts[1], "-a", arch]
            yield from self._pull_template(validate_alias(ref), "download", args)
            return
        meta = self.store.find(ref)
        if meta is None:
            raise ImageNotFound(
                ref, "lxc", "not in cman's LXC image store; pull takes template:busybox or DIST/RELEASE[/ARCH]"
            )
        yield PullProgress(None, f"{ref}: image is up to date (cman's LXC store, {str(meta['id'])[:19]})")

    def _oci_reference(self, ref: str) -> Reference | None:
        """The registry image ``ref`` names, or None (the precedence is in :mod:`.ociimages`)."""
        return oci_reference(ref, lambda: self.store.find(ref) is not None)

    def _pull_template(self, alias: str, template: str, args: list[str]) -> Iterator[PullProgress]:
        """Create a throw-away container with the template in a private LXC path inside the
        store, pack its rootfs into a tarball, store that as an image, destroy the container."""
        from ...models import PullProgress

        work = self.store.new_workdir()
        tmp_name = "cman-pull"
        conf = work / "create.conf"
        conf.write_text(render_config([("lxc.net.0.type", "empty")]))  # never started: no confinement to set
        try:
            yield PullProgress(None, f"creating a rootfs with LXC's {template} template")
            argv = ["-n", tmp_name, "-t", template, "-f", str(conf)]
            if args:
                argv += ["--", *args]
            try:
                tool(str(work), "lxc-create", *argv, timeout=900)
            except _proc.ProcError as err:
                raise EngineError(f"lxc: the {template} template failed: {err.message}") from err
            yield PullProgress(None, "packing the rootfs")
            packed = work / "packed.tar.gz"
            rootfs = work / tmp_name / "rootfs"
            _proc.run(["tar", "-C", str(rootfs), "--numeric-owner", "-czf", str(packed), "."], timeout=900,
                      backend="lxc")
            lxc_config = self._template_config(work / tmp_name / "config")
            with contextlib.suppress(CmanError):
                tool(str(work), "lxc-destroy", "-n", tmp_name, timeout=120, check=False)
            stage = self.store.new_workdir()
            try:
                sha, staged, scan = self.store.stage(packed, stage, move=True)
                built_here = images.host_architecture() if template == "busybox" else None
                with self.store.lock():
                    meta = self.store.commit(
                        stage, sha, staged, scan, alias=alias, lxc_config=lxc_config,
                        source={"kind": "template", "template": template, "args": args, "ref": alias},
                        architecture=scan.architecture or built_here,
                    )
            except BaseException:
                shutil.rmtree(stage, ignore_errors=True)
                raise
            yield PullProgress(None, f"stored image {str(meta['id'])[:19]} as {alias}")
        finally:
            if (work / tmp_name).exists():
                with contextlib.suppress(CmanError):
                    tool(str(work), "lxc-destroy", "-n", tmp_name, timeout=120, check=False)
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _template_config(config: Path) -> list[tuple[str, str]]:
        """The template's settings an image keeps (signals, mount entries); the rest cman writes."""
        return [(k, v) for k, v in config_values(config, TEMPLATE_CONFIG_KEYS) if v and not v.startswith("-")]

    def images(self) -> list[Image]:
        return [to_image(m) for m in self.store.all()]

    def image_inspect(self, ref: str) -> Image:
        return to_image(self.store.get(ref))

    def image_history(self, ref: str) -> list[ImageLayer]:
        from ...models import ImageLayer

        meta = self.store.get(ref)
        image = to_image(meta)
        source = meta.get("source") or {}
        return [ImageLayer(id=image.id, created=image.created, created_by=created_by(meta), size=image.size,
                           comment=f"rootfs tarball ({source.get('kind', '?')}) in cman's LXC image store")]

    def _image_users(self, image_id: str) -> list[str]:
        users = []
        for entry in self._container_dirs():
            meta = _files.read_json(Path(self.lxcpath) / entry / "cman.json") or {}
            if meta.get("image_id") == image_id:
                users.append(entry)
        return users

    def image_remove(self, ref: str, *, force: bool = False) -> None:
        """An image name that is one of several names of an image is simply dropped (Docker's
        untag); otherwise the image goes, refused (InUse) while a container of this LXC path
        was made from it, unless ``force``. Containers keep working: the layer their overlay
        stands on stays until the last of them is removed (:meth:`.store.ImageStore.delete`)."""
        with _files.locked(self._lock_path), self.store.lock():
            meta = self.store.get(ref)
            aliases = [a.removesuffix(":latest") for a in meta.get("aliases", [])]
            if ref.removesuffix(":latest") in aliases and len(aliases) > 1:
                self.store.drop_alias(meta, ref)
                return
            users = self._image_users(str(meta["id"]))
            if users and not force:
                raise InUse.image(ref, users)
            self.store.delete(meta)

    def image_prune(self) -> PruneResult:
        """Remove images that have no name and that no container of this LXC path was made
        from. An image loses its last name when another tarball is imported (or pulled)
        under that name, or when ``image rm`` drops one of its names."""
        from ...models import PruneResult

        removed: list[str] = []
        freed = 0
        with _files.locked(self._lock_path), self.store.lock():
            self.store.clean_stale_workdirs()
            for meta in self.store.all():
                if meta.get("aliases") or self._image_users(str(meta["id"])):
                    continue
                freed += self.store.delete(meta)
                removed.append(str(meta["id"]))
        return PruneResult(removed=tuple(removed), reclaimed_bytes=freed)

    def image_import(self, tarball: Path, name: str, *, config: ImageConfig | None = None) -> Image:
        """A rootfs tarball into cman's store as ``name``; a ``config`` is stored as a registry
        pull stores it (metadata ``image_config``, User resolved through the tarball)."""
        validate_alias(name)
        check_config_value("image name", name)
        if name.startswith(("template:", "download:")):
            raise InvalidValue("image name", name, "template: and download: are pull syntax")
        src = Path(tarball).resolve()
        if not src.is_file():
            raise InvalidValue("TARBALL", str(tarball), "no such file")
        stored = None if config is None else imageconfig.stored(imageconfig.resolve_in_tarball(config, src))
        work = self.store.new_workdir()
        try:
            sha, staged, scan = self.store.stage(src, work)
            with self.store.lock():
                meta = self.store.commit(work, sha, staged, scan, alias=name,
                                         source={"kind": "import", "path": str(src)}, image_config=stored)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return to_image(meta)
