"""Backend registry: name -> "module:Class", imported only when asked for.

Adding a backend is one module and one line here; the CLI needs no change.
Importing this package costs nothing: docker and pylxd load only when
:func:`load` is called for their backend.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from .base import Backend

REGISTRY: dict[str, str] = {
    "docker": "cman.backends.docker:DockerBackend",
    "lxd": "cman.backends.lxd:LxdBackend",
    "lxc": "cman.backends.lxc:LxcBackend",
}
"""Order matters: it is the order of auto-detection (Docker first)."""

ENV_BACKEND = "CMAN_BACKEND"


def names() -> list[str]:
    return list(REGISTRY)


def backend_class(name: str) -> type[Backend]:
    try:
        target = REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown backend {name!r}", hint=f"choose one of: {', '.join(REGISTRY)}"
        ) from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Backend] = getattr(module, class_name)
    return cls


def load(name: str) -> Backend:
    """Instantiate a backend (connects lazily or raises EngineUnavailable)."""
    return backend_class(name)()


def quick_reachable(name: str) -> bool:
    """Cheap reachability check without importing the engine's SDK.

    Used to pick a default backend and to decide which backends ``ps -a`` asks.
    """
    from . import _reach

    return _reach.reachable(name)


def default_name(explicit: str | None = None) -> str:
    """--backend, else $CMAN_BACKEND, else the first reachable engine (Docker first)."""
    if explicit:
        if explicit not in REGISTRY:
            backend_class(explicit)  # raises the UsageError that lists the choices
        return explicit
    env = os.environ.get(ENV_BACKEND)
    if env:
        if env not in REGISTRY:
            raise UsageError(f"unknown backend {env!r} in ${ENV_BACKEND}", hint=f"choose one of: {', '.join(REGISTRY)}")
        return env
    for name in REGISTRY:
        if quick_reachable(name):
            return name
    from ..errors import EngineUnavailable

    raise EngineUnavailable("cman", "no container engine is reachable", "run `cman engine status` to see how to start one")
