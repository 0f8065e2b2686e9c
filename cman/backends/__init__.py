"""Backend registry: name -> "package:Class", imported only when asked for.

Adding a backend is one package and one line here; the CLI needs no change. The package
has an ``endpoint`` module (``reachable()``, ``context_settings()``) and a lazy
``__init__`` (PEP 562) that imports the backend class only when it is asked for, so
picking the default engine or listing the reachable ones imports no backend code.
Importing this package costs nothing: docker and pylxd load only when
:func:`load` is called for their backend.

Endpoints. Where an engine is comes from its settings: the environment variables it
documents (``DOCKER_HOST``, ``CMAN_LXD_ENDPOINT``/``_CERT``/``_KEY``/``_VERIFY``, ``LXD_DIR``,
``CMAN_LXC_PATH``). A context (:mod:`cman.contexts`) is such a set of settings, stored;
``PACKAGE.endpoint.context_settings(url, options)`` of each backend package turns a
context's URL and options into them (validated), so the CLI knows no engine's settings.
:func:`load` with ``settings`` builds a backend for that endpoint: settings are bound
per thread (:func:`bound`) and read through :func:`setting`, so several contexts can be
asked at once (``ps --context all``); without them, the environment is the default.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterator, Mapping
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

CGROUP_PARENTS: dict[str, tuple[str, ...]] = {
    "docker": ("docker/*", "system.slice/docker-*.scope"),
    "lxd": ("lxc.payload.*",),
    "lxc": ("lxc.payload.*",),
}
"""Where each engine puts its containers' cgroups (globs under a hierarchy's root, for
Docker's cgroupfs and systemd drivers and liblxc's payloads). ``stats --no-stream`` reads
them before the engines' listings arrive; a container found elsewhere is still read, one
interval later. Kept here, not on the classes, so reading it imports no engine code."""

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


_BOUND = threading.local()
"""This thread's endpoint settings (``settings``: a dict, or absent for the environment)."""
_ENVIRON = threading.Lock()


def setting(key: str) -> str | None:
    """An engine setting: the endpoint bound in this thread (a context's) when it has ``key``,
    else the environment. An empty value is unset."""
    bound: Mapping[str, str] | None = getattr(_BOUND, "settings", None)
    value = bound[key] if bound is not None and key in bound else os.environ.get(key)
    return value or None


def bound_settings() -> dict[str, str] | None:
    """This thread's endpoint settings (None: the environment's)."""
    bound: dict[str, str] | None = getattr(_BOUND, "settings", None)
    return dict(bound) if bound is not None else None


def bind(settings: Mapping[str, str] | None) -> None:
    """Make ``settings`` this thread's endpoint until the next :func:`bind` (None: the environment)."""
    _BOUND.settings = dict(settings) if settings is not None else None


@contextlib.contextmanager
def bound(settings: Mapping[str, str] | None) -> Iterator[None]:
    """``settings`` as this thread's endpoint for the block, then the previous one again."""
    before = getattr(_BOUND, "settings", None)
    bind(settings)
    try:
        yield
    finally:
        _BOUND.settings = before


def endpoint_module(name: str) -> object:
    """The backend package's ``endpoint`` module: ``reachable()`` and ``context_settings()``,
    the two things asked of an engine before its backend class is needed."""
    checked(name, "a context")
    return importlib.import_module(f"{REGISTRY[name].partition(':')[0]}.endpoint")


def context_settings(name: str, url: str | None, options: Mapping[str, str]) -> dict[str, str]:
    """The settings that point backend ``name`` at ``url`` with ``options`` (cert, key, verify,
    lxcpath ...), checked by the engine's own rules (UsageError otherwise). Every setting the
    engine reads is in the result (empty: unset), so none leaks in from the environment."""
    module = endpoint_module(name)
    result: dict[str, str] = module.context_settings(url, dict(options))  # type: ignore[attr-defined]
    return result


def load(name: str, settings: Mapping[str, str] | None = None) -> Backend:
    """Instantiate a backend (connects lazily or raises EngineUnavailable); with ``settings``
    (:func:`context_settings`), for that endpoint instead of the environment's.

    A backend reads its settings when it is made (the LXC path) or when it connects (Docker,
    LXD): it is made here with them in the environment too (under a lock, then put back), and
    must be used where they are bound (:func:`bound`, :func:`bind`)."""
    cls = backend_class(name)
    if settings is None:
        return cls()
    with bound(settings), _ENVIRON:
        saved = {k: os.environ.get(k, "") for k in settings}
        try:
            apply_to_process(settings)
            return cls()
        finally:
            apply_to_process(saved)


def apply_to_process(settings: Mapping[str, str]) -> None:
    """Make ``settings`` the environment of this process (one context for the whole run, as
    ``--lxcpath`` does): every thread and every engine tool cman runs sees them."""
    for k, v in settings.items():
        if v:
            os.environ[k] = v
        else:
            os.environ.pop(k, None)


def quick_reachable(name: str) -> bool:
    """A cheap guess whether the engine answers (a socket connect, a PATH lookup): the backend
    package's ``endpoint.reachable()``, which imports neither the SDK nor the backend class.

    Used to pick a default backend and to decide which backends ``ps -a`` asks.
    """
    return bool(endpoint_module(name).reachable())  # type: ignore[attr-defined]


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
