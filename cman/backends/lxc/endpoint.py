"""Where the LXC backend works: an LXC path on this host (there is no daemon to point at).

A context of the lxc backend is an LXC path (``--lxcpath``, default /var/lib/lxc), stored
as ``$CMAN_LXC_PATH``: :func:`context_settings` checks it by the rules the backend applies
to that variable (:func:`.tools.lxc_path_from_env`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

from ...errors import InvalidValue


def reachable() -> bool:
    """No daemon to ask: the tools are installed, or not."""
    return shutil.which("lxc-start") is not None


def context_settings(url: str | None, options: Mapping[str, str]) -> dict[str, str]:
    """An LXC context's settings: ``{"CMAN_LXC_PATH": PATH}`` (absolute, no control characters)."""
    from .tools import DEFAULT_LXC_PATH, ENV_LXC_PATH, check_lxc_value  # not for reachable()

    unknown = sorted(set(options) - {"lxcpath"})
    if unknown:
        raise InvalidValue("option of an LXC context", f"--{unknown[0]}", "an LXC context takes only --lxcpath")
    if url:
        raise InvalidValue("--lxc", url, "an LXC context has no URL: the LXC tools run on this host (use --lxcpath)")
    path = options.get("lxcpath") or DEFAULT_LXC_PATH
    check_lxc_value("--lxcpath", path)
    if not os.path.isabs(path):
        raise InvalidValue("--lxcpath", path, "must be an absolute path")
    return {ENV_LXC_PATH: os.path.normpath(path)}
