"""cman: one container lifecycle manager for Docker, LXD and raw LXC.

The library is usable without the CLI::

    import cman
    docker = cman.backend("docker")
    outcome = cman.run(docker, cman.ContainerSpec(image="local/busybox", command=("true",)),
                       cman.StdIO(None, sys.stdout.buffer, sys.stderr.buffer), remove=True)

Importing ``cman`` loads no engine SDK; a backend's SDK loads when it is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends import load as backend
    from .backends import names as backend_names
    from .errors import CmanError, ExitCode
    from .lifecycle import ensure_image, run
    from .models import (
        Container,
        ContainerSpec,
        EngineStatus,
        ExecResult,
        Image,
        ImageLayer,
        LogChunk,
        PruneResult,
        PullProgress,
        State,
        StdIO,
    )

_LAZY = {
    "backend": ("backends", "load"),
    "backend_names": ("backends", "names"),
    "CmanError": ("errors", "CmanError"),
    "ExitCode": ("errors", "ExitCode"),
    "ensure_image": ("lifecycle", "ensure_image"),
    "run": ("lifecycle", "run"),
    **{
        name: ("models", name)
        for name in (
            "Container", "ContainerSpec", "EngineStatus", "ExecResult", "Image", "ImageLayer",
            "LogChunk", "PruneResult", "PullProgress", "State", "StdIO",
        )
    },
}


def __getattr__(name: str) -> Any:
    """Load the public API on first use, so the CLI's start-up pays only for what it runs."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'cman' has no attribute {name!r}") from None
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), attr)


__version__ = "0.1.0"

__all__ = [
    "CmanError",
    "Container",
    "ContainerSpec",
    "EngineStatus",
    "ExecResult",
    "ExitCode",
    "Image",
    "ImageLayer",
    "LogChunk",
    "PruneResult",
    "PullProgress",
    "State",
    "StdIO",
    "__version__",
    "backend",
    "backend_names",
    "ensure_image",
    "run",
]
