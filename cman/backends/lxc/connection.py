"""What every part of the LXC backend shares: the LXC path, the image store, the locks,
and the error boundary.

There is no daemon: the "connection" is an LXC path (``$CMAN_LXC_PATH``) and the
``lxc-*`` tools on PATH. ``LXCPATH/.cman.lock`` and the store's ``.lock`` are ``flock``
locks held around create, destroy and image changes, so concurrent cman processes
serialise those. Lock order: the network lock (:func:`cman.network.host_lock`), then
the LXC path's, then the image store's; the network lock is never taken while the LXC
path's is held.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._sys import files as _files
from ..._sys import proc as _proc
from ...errors import CmanError, ContainerNotFound, EngineError, EngineUnavailable
from ...validate import check_config_value, check_name
from ..base import Backend, Locality
from .net import Records
from .store import ImageStore
from .tools import ENV_LXC_PATH, Paths, image_store_from_env, info, lxc_path_from_env, tool

if TYPE_CHECKING:
    from ...models import EngineStatus

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULES = (
    "LXC container names are 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
)


class LxcConnection(Backend):
    """An LXC path, cman's image store and the network records of that path."""

    def __init__(self) -> None:
        self.lxcpath = lxc_path_from_env()
        self.store = ImageStore(image_store_from_env())
        self.net_records = Records(self.lxcpath)
        if shutil.which("lxc-start") is None:
            status = self.probe()
            raise EngineUnavailable(
                "lxc", status.problem or "lxc-start is not installed", status.fix or "apt-get install lxc"
            )

    # -- engine ---------------------------------------------------------------------------

    @classmethod
    def probe(cls) -> EngineStatus:
        from ...models import EngineStatus

        try:
            lxcpath = lxc_path_from_env()
        except CmanError as err:
            return EngineStatus("lxc", shutil.which("lxc-start") is not None, False, False,
                                problem=str(err), fix=f"set {ENV_LXC_PATH} to an absolute directory, or unset it")
        if shutil.which("lxc-start") is None:
            clash = " (the `lxc` on PATH is LXD's client, not the raw LXC tools)" if shutil.which("lxc") else ""
            return EngineStatus("lxc", False, False, False, endpoint=lxcpath,
                                problem=f"the raw LXC tools are not installed: no lxc-start on PATH{clash}",
                                fix="install them: apt-get install lxc")
        try:
            version = _proc.run(["lxc-ls", "--version"], timeout=10, backend="lxc").stdout.strip() or None
        except CmanError as err:
            return EngineStatus("lxc", True, False, False, endpoint=lxcpath,
                                problem=f"the LXC tools do not run: {err}",
                                fix="reinstall them: apt-get install --reinstall lxc")
        existing = Path(lxcpath)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            return EngineStatus("lxc", True, True, False, version=version, endpoint=lxcpath,
                                problem=f"no write access to {existing} (the LXC path)",
                                fix=f"run as root, or set {ENV_LXC_PATH} to a directory you own")
        return EngineStatus("lxc", True, True, True, version=version, endpoint=lxcpath)

    @classmethod
    def validate_name(cls, name: str) -> None:
        check_name(name, NAME_RE, 64, NAME_RULES)
        check_config_value("container name", name)

    def locality(self) -> Locality:
        """Always this host: the lxc-* tools run here, on this LXC path."""
        return Locality(True, self.lxcpath)

    # -- internals ----------------------------------------------------------------------------

    def _paths(self, name: str) -> Paths:
        return Paths(self.lxcpath, name)

    def _tool(self, name: str, *args: str, timeout: float = 30, check: bool = True) -> _proc.Completed:
        return tool(self.lxcpath, name, *args, timeout=timeout, check=check)

    @property
    def _lock_path(self) -> Path:
        return Path(self.lxcpath) / ".cman.lock"

    def _existing(self, ref: str) -> Paths:
        """Validate ``ref`` and make sure the container exists; raises ContainerNotFound."""
        try:
            self.validate_name(ref)
        except CmanError:
            raise ContainerNotFound(ref, "lxc") from None
        paths = self._paths(ref)
        if not paths.config.is_file():
            raise ContainerNotFound(ref, "lxc")
        return paths

    def _info(self, paths: Paths) -> tuple[str | None, int | None]:
        with self._boundary(paths.name, "read the state of"):
            return info(self.lxcpath, paths.name)

    @contextlib.contextmanager
    def _boundary(self, name: str, action: str) -> Iterator[None]:
        """Translate a failed lxc-* call into cman's errors, once, from the state read back."""
        try:
            yield
        except _proc.ProcError as err:
            if not self._paths(name).config.exists():
                raise ContainerNotFound(name, "lxc") from err
            raise EngineError(
                f"lxc: could not {action} {name}: {err.message}",
                hint=f"see {self._paths(name).lxclog}",
            ) from err

    def _meta(self, paths: Paths) -> dict[str, Any]:
        return _files.read_json(paths.meta) or {}

    def _update_state(self, paths: Paths, **changes: Any) -> dict[str, Any]:
        return _files.update_json(paths.state, paths.state_lock, **changes)

    def _container_dirs(self) -> list[str]:
        """The containers of the LXC path (a directory with a config), by name."""
        try:
            entries = os.listdir(self.lxcpath)
        except FileNotFoundError:
            return []
        return sorted(
            e for e in entries if not e.startswith(".") and os.path.isfile(os.path.join(self.lxcpath, e, "config"))
        )
