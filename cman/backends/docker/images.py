"""Docker images: references, pull (with progress), list, history, remove, prune, import."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from ..._sys.retry import idempotent
from ...errors import EngineError, ImageNotFound, InUse, InvalidName, SourceUnreachable
from ...models import Image, ImageLayer, PruneResult, PullProgress
from .connection import DockerConnection, boundary, is_transient, quote_ref
from .convert import container_name, image_from_raw, layer_from_raw

IMAGE_PATTERN = r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
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


class DockerImages(DockerConnection):
    @staticmethod
    def validate_image_name(ref: str) -> None:
        host, sep, rest = ref.partition("/")
        looks_like_host = sep and ("." in host or ":" in host or host == "localhost")
        body = rest if looks_like_host else ref
        if "@" in body:
            body, _, digest = body.partition("@")
            if not re.fullmatch(r"[a-z0-9]+:[a-fA-F0-9]{32,}", digest):
                raise InvalidName(f"invalid image digest in {ref!r}")
        if not re.fullmatch(IMAGE_PATTERN, body) or len(ref) > 255:
            raise InvalidName(
                f"invalid image reference {ref!r}",
                hint="use [REGISTRY/]NAME[:TAG] with a lowercase name, e.g. 127.0.0.1:5000/cman/busybox:latest",
            )

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
                event = json.loads(line)
                if "error" in event:
                    text = str(event.get("error"))
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
        return [image_from_raw(r) for r in self._call("GET", "/images/json", action="list images")]

    @idempotent(is_transient)
    def image_inspect(self, ref: str) -> Image:
        return image_from_raw(self._call("GET", f"/images/{quote_ref(ref)}/json", image=ref))

    @idempotent(is_transient)
    def image_history(self, ref: str) -> list[ImageLayer]:
        return [layer_from_raw(layer) for layer in self._call("GET", f"/images/{quote_ref(ref)}/history", image=ref)]

    def image_remove(self, ref: str, *, force: bool = False) -> None:
        image_id = self.image_inspect(ref).id
        if not force:
            users = self._containers_using(image_id)
            if users:
                raise InUse.image(ref, users)
        self._call("DELETE", f"/images/{quote_ref(ref)}", params={"force": force}, image=ref, action="remove image")

    def _containers_using(self, image_id: str) -> list[str]:
        found = self._call("GET", "/containers/json", params={"all": True, "filters": {"ancestor": [image_id]}})
        return [container_name(c) for c in found]

    def image_prune(self) -> PruneResult:
        result = self._call("POST", "/images/prune", params={"filters": {"dangling": ["true"]}}, action="prune images")
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
            for line in body.read().splitlines():
                if line.strip() and "error" in (event := json.loads(line)):
                    raise EngineError(f"docker import {name}: {event['error']}")
        return self.image_inspect(f"{repo}:{tag}")
