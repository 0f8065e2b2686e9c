"""Backend registry: name -> "package:Class", imported only when asked for.

Adding a backend is one package and one line here; the CLI needs no change.
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


def check_image(ref: str, name: str | None = None) -> None:
    """Refuse (InvalidName, exit 2) an image reference before any engine is probed: with a
    backend ``name``, by that engine's rules (:meth:`Backend.validate_image_ref`); without
    one, only what no engine could take. The common case, a valid OCI reference, imports no
    engine package."""
    if name is not None:
        backend_class(name).validate_image_ref(ref)
        return
    from ..oci.refs import parse

    try:
        parse(ref)
        return
    except UsageError as err:
        first = err
    for other in REGISTRY:
        try:
            backend_class(other).validate_image_ref(ref)
            return
        except UsageError:
            continue
    raise first


def load(name: str) -> Backend:
    """Instantiate a backend (connects lazily or raises EngineUnavailable)."""
    return backend_class(name)()


def quick_reachable(name: str) -> bool:
    """Cheap reachability check without importing the engine's SDK (:meth:`Backend.reachable`).

    Used to pick a default backend and to decide which backends ``ps -a`` asks.
    """
    return backend_class(name).reachable()


def reachable_names() -> list[str]:
    """Every backend that answers :func:`quick_reachable`, in registry order: the one meaning of
    "every reachable engine" (listings without --backend, ``--backend all``)."""
    return [n for n in REGISTRY if quick_reachable(n)]


def checked(name: str, source: str = "--backend") -> str:
    """A backend name the user gave, validated; ``source`` says where it came from."""
    if name not in REGISTRY:
        raise UsageError(f"unknown backend {name!r} in {source}", hint=f"choose one of: {', '.join(REGISTRY)}")
    return name


def explicit_name(option: str | None) -> str | None:
    """--backend, else $CMAN_BACKEND, else None."""
    if option:
        return checked(option, "--backend")
    env = os.environ.get(ENV_BACKEND)
    return checked(env, f"${ENV_BACKEND}") if env else None


def default_name(option: str | None = None) -> str:
    """--backend, else $CMAN_BACKEND, else the first reachable engine (Docker first)."""
    explicit = explicit_name(option)
    if explicit:
        return explicit
    for name in REGISTRY:
        if quick_reachable(name):
            return name
    from ..errors import NoEngine

    raise NoEngine()
