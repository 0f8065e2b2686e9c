"""Images: what an engine stores, a pull's progress, a prune's result, an image's config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import _Jsonable


@dataclass(frozen=True)
class Image(_Jsonable):
    backend: str
    id: str
    tags: tuple[str, ...]
    size: int | None = None
    """Bytes, when the engine tells."""
    created: datetime | None = None
    architecture: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageLayer(_Jsonable):
    id: str
    created: datetime | None
    created_by: str
    size: int | None
    comment: str = ""


@dataclass(frozen=True)
class PullProgress(_Jsonable):
    """One event of a pull: a layer's status and, while downloading, its byte counts."""

    layer: str | None
    status: str
    current: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class PruneResult(_Jsonable):
    removed: tuple[str, ...]
    reclaimed_bytes: int | None = None


@dataclass(frozen=True)
class ImageConfig(_Jsonable):
    """What an OCI image's config says about running it, the same on every engine
    (``image inspect`` shows it as ``extra["config"]``)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    """``KEY=VALUE`` entries, in the image's order."""
    workdir: str = ""
    user: str = ""
    """As the image says it (``name``, ``uid``, ``uid:gid``, ``name:group``); "" is root."""
    uid: int | None = None
    gid: int | None = None
    """``user`` resolved through the image's /etc/passwd and /etc/group (None: not resolved)."""
