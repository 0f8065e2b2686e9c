"""Backend-neutral results: the same fields whatever the engine.

Raw engine data that has no neutral field goes in ``extra``, as Libcloud does.
Unknown values are ``None``, never a placeholder such as 0 or "".

This module defines what listing containers needs (:class:`Container`, :class:`State`, the
labels); the rest loads on first use (PEP 562), since each frozen dataclass costs its
generated methods at import and ``cman ps`` needs none of them:

- :mod:`.image`: :class:`Image`, :class:`ImageLayer`, :class:`PullProgress`,
  :class:`PruneResult`, :class:`ImageConfig`.
- :mod:`.run`: :class:`ContainerSpec`, :class:`ExecResult`, :class:`LogChunk`, :class:`StdIO`.
- :mod:`.engine`: :class:`EngineStatus`, :class:`ClusterMember`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .._sys.lazy import lazy_attributes

if TYPE_CHECKING:
    from .engine import ClusterMember, EngineStatus
    from .image import Image, ImageConfig, ImageLayer, PruneResult, PullProgress
    from .run import ContainerSpec, ExecResult, LogChunk, StdIO

__all__ = [
    "MANAGED_LABEL",
    "NO_NETWORK",
    "RESERVED_LABEL_PREFIXES",
    "RUN_LABEL",
    "ClusterMember",
    "Container",
    "ContainerSpec",
    "EngineStatus",
    "ExecResult",
    "Image",
    "ImageConfig",
    "ImageLayer",
    "LogChunk",
    "PruneResult",
    "PullProgress",
    "State",
    "StdIO",
]
__getattr__ = lazy_attributes(
    __name__,
    {
        **dict.fromkeys(("Image", "ImageLayer", "PullProgress", "PruneResult", "ImageConfig"), "image"),
        **dict.fromkeys(("ContainerSpec", "ExecResult", "LogChunk", "StdIO"), "run"),
        **dict.fromkeys(("EngineStatus", "ClusterMember"), "engine"),
    },
)  # the other records on first use: `ps` needs Container and State only

MANAGED_LABEL = "cman.managed"
"""Label (Docker) / config key suffix (LXD: ``user.cman.managed``) marking cman's containers."""
RUN_LABEL = "cman.run"
"""Set by ``run`` on the container it creates: ``PID:STARTTIME`` of the cman process, so
``cman system prune`` can tell a container whose ``run`` was killed before it started."""
RESERVED_LABEL_PREFIXES = ("cman.", "user.cman.")
"""cman's own label namespace (``user.cman.`` is how LXD spells it): refused in user labels."""


NO_NETWORK = "none"
"""``--network none``: loopback only, on every backend; never the name of a network."""


class State(StrEnum):
    """Normalised container state."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    STOPPED = "stopped"
    REMOVING = "removing"
    DEAD = "dead"
    UNKNOWN = "unknown"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, frozenset, set)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


class _Jsonable:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601, enums as strings)."""
        out = _jsonable(self)
        assert isinstance(out, dict)
        return out


@dataclass(frozen=True)
class Container(_Jsonable):
    backend: str
    id: str
    name: str
    image: str
    state: State
    status: str
    """Engine's human text, e.g. "Exited (0) 3 minutes ago"."""
    managed: bool
    created: datetime | None = None
    command: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    pid: int | None = None
    """Host PID of the container's init process while it runs."""
    exit_code: int | None = None
    addresses: Mapping[str, str] = field(default_factory=dict)
    """Network name -> IPv4 address."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    location: str | None = None
    """The cluster member the container is on (LXD's ``location``); None when the engine is no cluster."""

    @property
    def ref(self) -> str:
        return f"{self.backend}:{self.name}"
