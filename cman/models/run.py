"""Running containers: what to create, a captured exec, log chunks, and a process's streams."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Literal

from . import _Jsonable


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
