"""Engines: one backend's status and the members of its cluster."""

from __future__ import annotations

from dataclasses import dataclass

from . import _Jsonable


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
