"""Which raw engine keys a profile may set (``[lxd]``, ``[lxc]``, ``[pve]``), and how their values
are checked: the one home of that rule, read by the profile loader (exit 2 naming the file) and
again by each backend's ``validate_spec`` (a library caller's ``ContainerSpec.extras`` gets the
same check).

Why an allowlist and not a denylist: a raw key can undo cman's confinement (``lxc.idmap``,
``raw.lxc``, ``security.privileged``), run a program on the host (``lxc.hook.*``), read another
file as config (``lxc.include``) or write where cman does not look (``lxc.log.*``). Only keys
that tune limits, start-up and kernel parameters are listed; privilege comes only from the
first-class ``privileged`` and ``nesting`` settings, which cman announces and writes itself.
Values are one line, never empty, never starting with '-' (:func:`cman.validate.check_config_value`)
and without blanks or control characters at either end (LXC trims them).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from ..errors import InvalidValue
from ..validate import check_config_value

BACKENDS = ("lxd", "lxc", "pve")
"""Backends whose raw keys a profile may carry (Docker has none: every Docker setting cman
knows is first-class)."""

LXD_EXACT = frozenset({
    "security.nesting",
    "security.syscalls.intercept.mknod",
    "security.syscalls.intercept.setxattr",
    "boot.autostart", "boot.autostart.delay", "boot.autostart.priority", "boot.stop.priority",
})
LXD_PREFIXES = ("limits.",)
LXC_EXACT = frozenset({
    "lxc.cap.drop",  # more drops only: an empty value (which would clear them) is refused
    "lxc.start.auto", "lxc.start.delay", "lxc.start.order", "lxc.group",
    "lxc.tty.max", "lxc.pty.max",
})
LXC_PREFIXES = (
    "lxc.prlimit.", "lxc.sysctl.",
    "lxc.cgroup.cpu.", "lxc.cgroup.cpuset.", "lxc.cgroup.memory.", "lxc.cgroup.pids.", "lxc.cgroup.blkio.",
    "lxc.cgroup2.cpu.", "lxc.cgroup2.cpuset.", "lxc.cgroup2.memory.", "lxc.cgroup2.pids.", "lxc.cgroup2.io.",
)
PVE_EXACT = frozenset({"features", "unprivileged", "onboot", "swap"})

NEVER = {
    "lxc": {
        "lxc.include": "it would read another file as config",
        "lxc.hook.": "a hook runs a program on the host",
        "lxc.log.": "cman owns the container's log file",
        "lxc.idmap": "cman sets the id map (use `privileged` to drop it)",
        "lxc.apparmor.": "use `nesting` or `privileged`",
        "lxc.cgroup.devices.": "device access comes with `nesting` only",
        "lxc.cgroup2.devices.": "device access comes with `nesting` only",
        "lxc.mount.": "mounts are not raw keys",
        "lxc.rootfs.": "cman owns the rootfs",
        "lxc.net.": "use `network`",
    },
    "lxd": {
        "raw.": "raw LXC config and id maps bypass LXD's checks",
        "security.privileged": "use `privileged = true` (cman says so on stderr)",
        "security.idmap.": "cman keeps LXD's id map",
        "environment.": "use `env`",
        "user.": "use `labels`",
        "volatile.": "LXD's own state",
    },
    "pve": {},
}
"""Keys refused with a reason of their own (prefixes end with '.'); everything else off the list is
refused as "not on the allowlist"."""

_KEY = re.compile(r"[a-z0-9][a-z0-9_.\-]*")
_PVE_FEATURE_FLAGS = ("force_rw_sys", "fuse", "keyctl", "mknod", "nesting")
_PVE_MOUNT = re.compile(r"[a-zA-Z0-9_; ]+")


def allowed(backend: str) -> tuple[str, ...]:
    """The allowlist of ``backend`` as shown to users (prefixes end with '*')."""
    exact, prefixes = _lists(backend)
    return (*sorted(exact), *(p + "*" for p in prefixes))


def _lists(backend: str) -> tuple[frozenset[str], tuple[str, ...]]:
    if backend == "lxd":
        return LXD_EXACT, LXD_PREFIXES
    if backend == "lxc":
        return LXC_EXACT, LXC_PREFIXES
    if backend == "pve":
        return PVE_EXACT, ()
    raise InvalidValue("engine section", backend, f"cman takes raw keys only for {', '.join(BACKENDS)}")


def _refusal(backend: str, key: str) -> str | None:
    for bad, why in NEVER.get(backend, {}).items():
        if key == bad or (bad.endswith(".") and key.startswith(bad)):
            return f"never from a profile: {why}"
    exact, prefixes = _lists(backend)
    if key in exact or any(key.startswith(p) and len(key) > len(p) for p in prefixes):
        return None
    return f"not on the allowlist ({', '.join(allowed(backend))})"


def to_text(backend: str, value: object) -> str | None:
    """A TOML value as the engine spells it (booleans: LXD true/false, LXC and PVE 1/0); None
    when the type is wrong."""
    if isinstance(value, bool):
        return ("true" if value else "false") if backend == "lxd" else ("1" if value else "0")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return None


def check_extra(backend: str, key: str, value: object) -> str:
    """One raw key of ``backend``: allowed and with a safe one-line value; returns the value as text.
    Raises InvalidValue naming the key (the caller adds the file)."""
    refused = _refusal(backend, key)
    if refused:
        raise InvalidValue(f"{backend} key", key, refused)
    if not _KEY.fullmatch(key):
        raise InvalidValue(f"{backend} key", key, "keys are lower-case letters, digits, '.', '_' and '-'")
    text = to_text(backend, value)
    if text is None:
        raise InvalidValue(f"{backend}.{key}", value, "must be a string, an integer or a boolean")
    check_config_value(f"{backend}.{key}", text)
    if text != text.strip(" \t") or any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in text):
        raise InvalidValue(f"{backend}.{key}", text, "must not have blanks at either end or control characters")
    if backend == "pve":
        _check_pve(key, text)
    return text


def _check_pve(key: str, text: str) -> None:
    """PVE's own formats (from its published LXC API schema, ../shared/pve)."""
    if key in ("unprivileged", "onboot"):
        if text not in ("0", "1"):
            raise InvalidValue(f"pve.{key}", text, "must be 0 or 1 (or a boolean)")
    elif key == "swap":
        if not text.isdigit():
            raise InvalidValue("pve.swap", text, "must be a number of MiB")
    elif key == "features":
        for part in text.split(","):
            name, sep, val = part.partition("=")
            if not sep:
                raise InvalidValue("pve.features", text, f"{part!r}: expected NAME=VALUE")
            if name in _PVE_FEATURE_FLAGS:
                if val not in ("0", "1"):
                    raise InvalidValue("pve.features", text, f"{name} must be 0 or 1")
            elif name == "mount":
                if not _PVE_MOUNT.fullmatch(val):
                    raise InvalidValue("pve.features", text, "mount is fstype;fstype;...")
            else:
                raise InvalidValue("pve.features", text,
                                   f"unknown feature {name!r} (PVE knows {', '.join((*_PVE_FEATURE_FLAGS, 'mount'))})")


def check_extras(backend: str, values: Mapping[str, object]) -> dict[str, str]:
    """Every key of one engine section (:func:`check_extra`), as text."""
    return {key: check_extra(backend, key, value) for key, value in values.items()}
