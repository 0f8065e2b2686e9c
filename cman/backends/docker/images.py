"""Docker images: references, pull (with progress), list, history, remove, prune, import."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..._sys.retry import idempotent
from ...errors import EngineError, ImageNotFound, InUse, SourceUnreachable
from ...models import Image, ImageLayer, PruneResult, PullProgress
from . import refs
from .connection import DockerConnection, boundary, is_transient
from .convert import container_name, image_from_raw, layer_from_raw

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

    def pull(self, ref: str) -> Iterator[PullProgress]:
        self.validate_image_name(ref)
        repo, tag = repo_and_tag(ref)
        try:
            yield from self._pull(ref, repo, tag)
        except EngineError as err:
            text = str(err).lower()
            if any(needle in text for needle in UNREACHABLE_SOURCE):
                raise SourceUnreachable(ref, err.message.removeprefix("docker pull: ")) from err
            raise

    def _pull(self, ref: str, repo: str, tag: str) -> Iterator[PullProgress]:
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
        result = self._call("POST", "/images/prune", params={"filters": {"dangling": ["true"]}}, action="prune images",
                            kind=dict)
        deleted = tuple(str(d.get("Deleted") or d.get("Untagged")) for d in (result.get("ImagesDeleted") or []))
        return PruneResult(removed=deleted, reclaimed_bytes=result.get("SpaceReclaimed"))

    def image_import(self, tarball: Path, name: str) -> Image:
        self.validate_image_name(name)
        repo, tag = repo_and_tag(name)
        cmd = json.dumps(list(DEFAULT_CMD))
        with boundary(image=name, action="import"), open(tarball, "rb") as data, self.api.stream(
            "POST", "/images/create",
            params={"fromSrc": "-", "repo": repo, "tag": tag, "changes": f"CMD {cmd}"},
            data=data, content_type="application/x-tar",
        ) as body:
            made = None
            for line in body.read().splitlines():
                event = progress_event(line, f"import {name}") if line.strip() else {}
                if (text := progress_error(event)) is not None:
                    raise EngineError(f"docker import {name}: {text}")
                status = str(event.get("status") or "")
                if IMAGE_ID_RE.fullmatch(status):
                    made = status
        # By the ID the daemon reports: the name may already be on another import's image
        # (parallel imports under one name).
        return self.image_inspect(made or f"{repo}:{tag}")
