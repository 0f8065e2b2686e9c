"""Docker images: references, pull (with progress), list, history, remove, prune, import."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..._sys.retry import idempotent
from ...errors import CmanError, EngineError, ImageNotFound, InUse, SourceUnreachable
from . import refs
from .connection import DockerConnection, boundary, is_transient
from .convert import container_name, image_from_raw, layer_from_raw

if TYPE_CHECKING:
    from ...models import Image, ImageLayer, PruneResult, PullProgress
    from ...oci.refs import Reference

IMAGE_ID_RE = re.compile(r"sha256:[0-9a-f]{64}")
"""The last progress line of an import: ``{"status": "sha256:ID"}``, the image it made."""
DEFAULT_CMD = ("/bin/sh",)
"""CMD given to images made by ``image import`` so ``cman run -it IMAGE`` gives a shell."""

UNREACHABLE_SOURCE = ("dial tcp", "connection refused", "no such host", "i/o timeout", "proxyconnect", "network is unreachable")
"""Daemon messages (HTTP 500 on pull) that mean the registry cannot be reached."""


def repo_and_tag(ref: str) -> tuple[str, str]:
    """'host:5000/a/b:tag' -> ('host:5000/a/b', 'tag'); the tag defaults to latest."""
    if "@" in ref:
        repo, _, digest = ref.partition("@")
        return repo, digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, "latest"


def progress_error(event: dict[str, Any]) -> str | None:
    """The error of a pull or import progress event: ``errorDetail.message`` (``error`` is
    deprecated since API 1.48 and may be left out), or None."""
    detail = event.get("errorDetail")
    if not detail and "error" not in event:
        return None
    text = detail.get("message") if isinstance(detail, dict) else None
    return str(text or event.get("error") or "unknown error")


def progress_event(line: bytes, what: str) -> dict[str, Any]:
    """One line of a progress stream (JSON object per line); EngineError for anything else."""
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise EngineError(f"docker {what}: unexpected progress line {line[:80]!r}")
    return event


class DockerImages(DockerConnection):
    @staticmethod
    def validate_image_name(ref: str) -> None:
        refs.check_image(ref)

    @classmethod
    def validate_image_ref(cls, ref: str) -> None:
        """The daemon takes OCI references only (:mod:`cman.oci.refs`)."""
        refs.check_image(ref)

    def pull(self, ref: str) -> Iterator[PullProgress]:
        """The daemon pulls. A docker.io reference goes to cman's registry mirrors when
        :mod:`cman.config` has some (see :meth:`_pull_mirrored`); otherwise the daemon decides,
        with its own ``registry-mirrors``."""
        self.validate_image_name(ref)
        from ... import config as _config
        from ...oci import layout
        from ...oci.refs import DEFAULT_REGISTRY, parse

        parsed = parse(ref)
        if parsed.registry == DEFAULT_REGISTRY:
            config = _config.load()
            if config.registry_mirrors:
                yield from self._pull_mirrored(parsed, layout.sources(parsed, config))
                return
        yield from self._pull_translated(ref)

    def _pull_translated(self, ref: str) -> Iterator[PullProgress]:
        repo, tag = repo_and_tag(ref)
        try:
            yield from self._pull(ref, repo, tag)
        except EngineError as err:
            text = str(err).lower()
            if any(needle in text for needle in UNREACHABLE_SOURCE):
                raise SourceUnreachable(ref, err.message.removeprefix("docker pull: ")) from err
            raise

    def _pull_mirrored(self, ref: Reference, mirrors: list[Reference]) -> Iterator[PullProgress]:
        """Pull ``MIRROR/library/NAME:TAG`` from the first mirror that has it and tag it as
        docker.io's ``NAME:TAG``, so ``run NAME`` finds it as with the daemon's own mirrors.
        The mirror's name is removed again unless it was there before (a digest-only
        reference keeps it: a digest cannot be a tag)."""
        from ...models import PullProgress

        errors: list[CmanError] = []
        for src in mirrors:
            mirror_name = src.canonical
            try:
                self.image_inspect(mirror_name)
                existed = True
            except ImageNotFound:
                existed = False
            announced = False  # once the mirror answers: a failed pull stays one line
            try:
                for event in self._pull_translated(mirror_name):
                    if not announced:
                        announced = True
                        yield PullProgress(None, f"pulling {ref.canonical} from the registry mirror {src.registry}")
                    yield event
            except (ImageNotFound, SourceUnreachable) as err:
                errors.append(err)
                continue
            if ref.tag is None:
                return
            local = ref.repository.removeprefix("library/")
            self._call("POST", f"/images/{refs.image(mirror_name)}/tag", params={"repo": local, "tag": ref.tag},
                       image=mirror_name, action="tag")
            if not existed:
                self._call("DELETE", f"/images/{refs.image(mirror_name)}", params={"noprune": True},
                           image=mirror_name, action="untag")
            yield PullProgress(None, f"tagged {local}:{ref.tag}")
            return
        raise errors[0]

    def _pull(self, ref: str, repo: str, tag: str) -> Iterator[PullProgress]:
        from ...models import PullProgress

        with boundary(image=ref, action="pull"), self.api.stream(
            "POST", "/images/create", params={"fromImage": repo, "tag": tag}
        ) as body:
            while line := body.readline():
                if not line.strip():
                    continue
                event = progress_event(line, f"pull {ref}")
                if (text := progress_error(event)) is not None:
                    if "not found" in text or "manifest unknown" in text:
                        raise ImageNotFound(ref, "docker", text)
                    raise EngineError(f"docker pull {ref}: {text}")
                detail = event.get("progressDetail") or {}
                yield PullProgress(
                    layer=event.get("id"),
                    status=str(event.get("status", "")),
                    current=detail.get("current"),
                    total=detail.get("total"),
                )

    @idempotent(is_transient)
    def images(self) -> list[Image]:
        return [image_from_raw(r) for r in self._call("GET", "/images/json", action="list images", kind=list)]

    @idempotent(is_transient)
    def image_inspect(self, ref: str) -> Image:
        return image_from_raw(self._call("GET", f"/images/{refs.image(ref)}/json", image=ref, kind=dict))

    @idempotent(is_transient)
    def image_history(self, ref: str) -> list[ImageLayer]:
        layers = self._call("GET", f"/images/{refs.image(ref)}/history", image=ref, kind=list)
        return [layer_from_raw(layer) for layer in layers]

    def image_remove(self, ref: str, *, force: bool = False) -> None:
        image_id = self.image_inspect(ref).id
        if not force:
            users = self._containers_using(image_id)
            if users:
                raise InUse.image(ref, users)
        self._call("DELETE", f"/images/{refs.image(ref)}", params={"force": force}, image=ref, action="remove image")

    def _containers_using(self, image_id: str) -> list[str]:
        found = self._call("GET", "/containers/json", params={"all": True, "filters": {"ancestor": [image_id]}},
                           kind=list)
        return [container_name(c) for c in found]

    def image_prune(self) -> PruneResult:
        from ...models import PruneResult

        result = self._call("POST", "/images/prune", params={"filters": {"dangling": ["true"]}}, action="prune images",
                            kind=dict)
        deleted = tuple(str(d.get("Deleted") or d.get("Untagged")) for d in (result.get("ImagesDeleted") or []))
        return PruneResult(removed=deleted, reclaimed_bytes=result.get("SpaceReclaimed"))
