"""Backend-neutral results: the same fields whatever the engine.

Raw engine data that has no neutral field goes in ``extra``, as Libcloud does.
Unknown values are ``None``, never a placeholder such as 0 or "".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import IO, Any, Literal

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
class ContainerSpec(_Jsonable):
    """What to create. Validated by the CLI/library before any engine call."""

    image: str
    name: str | None = None
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    tty: bool = False
    interactive: bool = False
    """Keep stdin open (``-i``)."""
    cpus: float | None = None
    memory: int | None = None
    """Bytes."""
    network: str | None = None
    ip: str | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    auto_remove: bool = False
    """The engine deletes the container when it stops (``run --rm``), also when cman is gone."""
    privileged: bool = False
    """Run without the user-namespace/AppArmor/capability confinement the engine applies by
    default (``--privileged``). Only when asked; cman says so on stderr."""
    nesting: bool = False
    """Containers may run inside this one (Docker in LXD/LXC): each engine's form, written by the
    backend itself (``Feature.NESTING``); the container stays unprivileged unless ``privileged``."""
    target: str | None = None
    """The cluster member to create the container on (``--target``; ``Feature.CLUSTER``)."""
    extras: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Raw engine keys by backend name (``{"lxd": {"limits.processes": "500"}}``), from profiles; a
    backend applies its own section only, and only keys of :mod:`cman.profiles.allow`."""


@dataclass(frozen=True)
class ExecResult(_Jsonable):
    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class LogChunk:
    stream: Literal["stdout", "stderr"]
    data: bytes


@dataclass
class StdIO:
    """Where a foreground process's streams go.

    The CLI passes the terminal's binary streams; library users pass pipes or
    ``io.BytesIO``. ``stdin`` is None when the process gets no input (no ``-i``).
    """

    stdin: IO[bytes] | None
    stdout: IO[bytes]
    stderr: IO[bytes]
    tty: bool = False
    """Allocate a pty in the container and put the local terminal in raw mode."""


@dataclass(frozen=True)
class EngineStatus(_Jsonable):
    """What ``cman engine status`` reports for one backend."""

    backend: str
    installed: bool
    running: bool
    reachable: bool
    version: str | None = None
    endpoint: str | None = None
    problem: str | None = None
    fix: str | None = None


@dataclass(frozen=True)
class ClusterMember(_Jsonable):
    """One member of an engine's cluster, as ``cman engine status`` shows it."""

    name: str
    url: str
    status: str
    """The engine's word, lower-cased: ``online``, ``offline``, ``evacuated``, ``blocked``."""
    message: str = ""
    roles: tuple[str, ...] = ()
    architecture: str | None = None
    failure_domain: str | None = None


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
