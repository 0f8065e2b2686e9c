"""LXD images: pull through the daemon, list, inspect, remove, prune, import a rootfs tarball.

``image import TARBALL NAME`` repacks a rootfs tarball as a unified LXD image
(``metadata.yaml`` with the rootfs's architecture + ``rootfs/``, :mod:`.imagebuild`)
and imports it with the alias NAME. ``pull REMOTE:ALIAS`` (``images:debian/12``) or
``pull https://HOST[:PORT][/PATH]:ALIAS`` makes the daemon copy from a simplestreams
server; docker-style short names (``debian:12``) map to those through the table of
:mod:`cman.images`, which ``$CMAN_LXD_IMAGE_MAP`` extends. cman itself sends nothing to
the image server. LXD images have no layers: ``history`` shows one.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..._sys.retry import idempotent
from ..._sys.times import parse_time
from ...errors import CmanError, EngineError, EngineUnavailable, ImageNotFound, InUse, InvalidValue
from ...oci import imageconfig
from ..base import ImageServer, loopback_url
from .connection import OperationFailed, _boundary, _is_transient
from .convert import OCI_CONFIG_PROPERTY, _image_from_raw, _progress_event
from .ociimages import LxdOciImages

if TYPE_CHECKING:
    from ...models import Image, ImageConfig, ImageLayer, PruneResult, PullProgress
    from .imagebuild import BuiltImage, RemoteRef


_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
"""A URL in a daemon's error text: its host and path are names, not the daemon's words."""

_STALE_INDEX = (
    "check the alias; the daemon reads the server's index from its own copy, up to an hour old "
    "(older while the server does not answer), so an image the server got since is not seen yet"
)


def _canonical(ref: str) -> str | None:
    from ...oci.refs import parse

    try:
        return parse(ref).canonical
    except CmanError:
        return None


class LxdImages(LxdOciImages):
    """The daemon's image store, by alias, fingerprint or short name."""

    @classmethod
    def image_servers(cls) -> list[ImageServer]:
        """The remotes of ``$CMAN_LXD_REMOTES`` with their pinned certificates. The built-in
        public remotes are left out: ``search`` contacts only servers the user named."""
        from ... import images
        from . import imagebuild

        configured = images.env_mapping(imagebuild.ENV_REMOTES)
        known = imagebuild.remotes()  # validates the URLs
        return [ImageServer(name, known[name], certificate=imagebuild.pinned_certificate(name, known[name]))
                for name in configured]

    def _image_raw(self, ref: str) -> dict[str, Any]:
        """Resolve a reference to a local image (see :mod:`.imagebuild` for the order)."""
        from pylxd import exceptions as lxd_exc

        from . import imagebuild

        api = self.client.api.images
        candidates = [ref]
        expanded = imagebuild.expand(ref)
        if expanded != ref:
            candidates.append(expanded)
        canonical = _canonical(ref)  # a registry image is stored under its canonical reference
        if canonical is not None and canonical not in candidates:
            candidates.append(canonical)
        for name in candidates:
            if not name or name.startswith("-"):
                continue
            try:
                target = api.aliases[quote(name, safe="")].get().json()["metadata"]["target"]
                data: dict[str, Any] = api[target].get().json()["metadata"]
                return data
            except lxd_exc.NotFound:
                pass
        if imagebuild.looks_like_fingerprint(ref):
            try:
                data = api[ref].get().json()["metadata"]
                return data
            except lxd_exc.NotFound:
                pass
        raise ImageNotFound(ref, "lxd")

    def pull(self, ref: str) -> Iterator[PullProgress]:
        """``REMOTE:ALIAS`` / ``https://HOST[:PORT][/PATH]:ALIAS`` / a short name of the image map.

        The daemon downloads; cman sends nothing to the image server itself. Progress
        comes from the operation's ``download_progress``, polled.
        """
        from ...models import PullProgress
        from . import imagebuild

        oci_ref = self._oci_reference(ref)
        if oci_ref is not None:
            yield from self._pull_oci(oci_ref)
            return
        target = imagebuild.expand(ref)
        remote = imagebuild.parse_remote(target)
        if remote is None:
            raise ImageNotFound(
                ref, "lxd",
                "not a remote reference: write REMOTE:ALIAS (remotes: "
                + ", ".join(imagebuild.remotes()) + ") or https://HOST[:PORT]:ALIAS",
            )
        body: dict[str, Any] = {
            "source": {
                "type": "image",
                "mode": "pull",
                "server": remote.server,
                "protocol": remote.protocol,
                "alias": remote.alias,
            },
            "aliases": [{"name": remote.canonical, "description": f"cman pull {ref}"}],
            "auto_update": False,
        }
        if remote.certificate is not None:
            body["source"]["certificate"] = remote.certificate
        with _boundary(image=ref, action="pull"):
            operation = str(self.client.api.images.post(json=body).json()["operation"])
        last: str | None = None
        announced = False
        while True:
            with _boundary(image=ref, action="pull"):
                try:
                    meta = self._wait_op(operation, timeout=1)
                except OperationFailed as err:
                    raise self._pull_failed(ref, remote, err.message) from err
            if not announced:  # only once the server answered: a failed pull prints one line
                announced = True
                yield PullProgress(None, f"Pulling {remote.alias} from {remote.server}")
            details = meta.get("metadata") or {}
            if meta.get("status") == "Success":
                fingerprint = str(details.get("fingerprint") or "")
                yield PullProgress(None, f"Pulled {remote.canonical} ({fingerprint[:12]})")
                return
            progress = str(details.get("download_progress") or "")
            if progress and progress != last:
                last = progress
                yield _progress_event(progress)

    def _pull_failed(self, ref: str, remote: RemoteRef, text: str) -> CmanError:
        """A failed pull: the server answered without the image (LXD 5.0.2 says "The requested
        image couldn't be found"; older ones "alias not found"), or it could not be reached.

        Only the daemon's words count, not a URL it quotes: a 404 from a server whose path
        says "alias" is a server that cannot be reached, not a missing image. The daemon
        answers "not found" from its cached copy of the server's index, so the hint says so."""
        low = _URL.sub("URL", text).lower()
        if ("not found" in low and "alias" in low) or "couldn't be found" in low:
            missing = ImageNotFound(ref, "lxd", f"{remote.alias} is not on {remote.server}")
            missing.hint = _STALE_INDEX
            return missing
        if "x509" in low or "certificate" in low:
            from .imagebuild import ENV_REMOTE_CERTS

            return EngineUnavailable(
                "lxd", f"the image server {remote.server} is not trusted: {text}",
                f"if it is yours, pin its certificate: {ENV_REMOTE_CERTS}='{{\"NAME\": \"/path/to/server.crt\"}}' "
                "with NAME the remote's name (or its https:// URL)",
            )
        proxy = ""
        if not loopback_url(remote.server):  # the daemon's proxy is never used for loopback
            with contextlib.suppress(Exception):
                proxy = str(self.client.host_info.get("config", {}).get("core.proxy_https") or "")
        via = f" through the proxy {proxy}" if proxy else ""
        return EngineUnavailable(
            "lxd",
            f"the image server {remote.server} cannot be reached{via}: {text}",
            "make the image locally (cman --backend lxd image import TARBALL NAME) "
            "or pull from a server you can reach (https://HOST[:PORT]:ALIAS)",
        )

    @idempotent(_is_transient)
    def images(self) -> list[Image]:
        with _boundary(action="list images"):
            raw = self.client.api.images.get(params={"recursion": "1"}).json()["metadata"]
        return [_image_from_raw(r) for r in raw]

    @idempotent(_is_transient)
    def image_inspect(self, ref: str) -> Image:
        with _boundary(image=ref):
            return _image_from_raw(self._image_raw(ref))

    @idempotent(_is_transient)
    def image_history(self, ref: str) -> list[ImageLayer]:
        """LXD images have no layers: one entry, the image itself."""
        from ...models import ImageLayer

        with _boundary(image=ref):
            raw = self._image_raw(ref)
        props = raw.get("properties") or {}
        source = raw.get("update_source") or {}
        created_by = str(props.get("description") or "")
        if source.get("server"):
            created_by = f"pulled from {source.get('server')}:{source.get('alias', '')}"
        return [
            ImageLayer(
                id=str(raw["fingerprint"]),
                created=parse_time(raw.get("created_at")) or parse_time(raw.get("uploaded_at")),
                created_by=created_by,
                size=raw.get("size"),
                comment=f"uploaded {raw.get('uploaded_at', '')}".strip(),
            )
        ]

    def _image_users(self, fingerprint: str) -> list[str]:
        raw = self.client.api.instances.get(params={"recursion": "1"}).json()["metadata"]
        return sorted(
            str(r["name"]) for r in raw if (r.get("config") or {}).get("volatile.base_image") == fingerprint
        )

    def image_remove(self, ref: str, *, force: bool = False) -> None:
        """Remove an image; with several aliases, removing by alias drops just that alias (like ``docker rmi TAG``)."""
        with _boundary(image=ref, action="remove image"):
            raw = self._image_raw(ref)
            fingerprint = str(raw["fingerprint"])
            aliases = [str(a["name"]) for a in raw.get("aliases") or []]
            if ref in aliases and len(aliases) > 1:
                self.client.api.images.aliases[quote(ref, safe="")].delete()
                return
            if not force:
                users = self._image_users(fingerprint)
                if users:
                    raise InUse.image(ref, users)
            self._sync_or_wait(self.client.api.images[fingerprint].delete())

    def image_prune(self) -> PruneResult:
        """Remove images that have no alias and that no container was made from."""
        from ...models import PruneResult

        removed: list[str] = []
        reclaimed = 0
        with _boundary(action="prune images"):
            images = self.client.api.images.get(params={"recursion": "1"}).json()["metadata"]
            instances = self.client.api.instances.get(params={"recursion": "1"}).json()["metadata"]
            used = {(r.get("config") or {}).get("volatile.base_image") for r in instances}
            for raw in images:
                fingerprint = str(raw["fingerprint"])
                if raw.get("aliases") or fingerprint in used:
                    continue
                self._sync_or_wait(self.client.api.images[fingerprint].delete())
                removed.append(fingerprint)
                reclaimed += int(raw.get("size") or 0)
        return PruneResult(removed=tuple(removed), reclaimed_bytes=reclaimed)

    def image_import(self, tarball: Path, name: str, *, config: ImageConfig | None = None) -> Image:
        """Build a unified LXD image (``metadata.yaml`` + ``rootfs/``) from a rootfs tarball and
        import it with the alias NAME. Re-importing the same tarball reuses the image (the
        build is deterministic); an alias already in use moves to the new image. A
        ``config`` goes where a registry pull puts it (the ``cman.oci.config`` property)."""
        from . import imagebuild

        imagebuild.check_alias(name)
        if imagebuild.parse_remote(name) is not None:
            raise InvalidValue("NAME", name, "looks like a remote reference (REMOTE:ALIAS); choose a plain name")
        if not tarball.is_file():
            raise InvalidValue("TARBALL", str(tarball), "no such file")
        properties = None
        if config is not None:
            stored = imageconfig.stored(imageconfig.resolve_in_tarball(config, tarball))
            properties = {OCI_CONFIG_PROPERTY: json.dumps(stored, sort_keys=True)}
        built = imagebuild.build_unified(tarball, name, properties=properties)
        try:
            with _boundary(image=name, action="import"):
                self._upload_and_alias(built, name)
                return _image_from_raw(self._image_raw(name))
        finally:
            built.path.unlink(missing_ok=True)

    def _upload_and_alias(self, built: BuiltImage, name: str) -> None:
        from pylxd import exceptions as lxd_exc

        api = self.client.api.images
        try:
            api[built.fingerprint].get()
        except lxd_exc.NotFound:
            with open(built.path, "rb") as data:
                response = api.post(data=data, headers={"Content-Type": "application/octet-stream"})
            meta = self._sync_or_wait(response)
            fingerprint = str((meta.get("metadata") or {}).get("fingerprint") or built.fingerprint)
            if fingerprint != built.fingerprint:
                raise EngineError(f"lxd import: stored as {fingerprint}, expected {built.fingerprint}") from None
        alias = quote(name, safe="")
        try:
            current = api.aliases[alias].get().json()["metadata"]
        except lxd_exc.NotFound:
            api.aliases.post(json={"name": name, "target": built.fingerprint, "description": "cman image import"})
            return
        if current.get("target") != built.fingerprint:
            api.aliases[alias].put(json={"target": built.fingerprint, "description": "cman image import"})
