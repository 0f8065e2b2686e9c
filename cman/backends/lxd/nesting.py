"""A container's settings from profiles on LXD: raw keys of the allowlist, and nesting.

Nesting on LXD is ``security.nesting=true``; Docker inside also wants the mknod and setxattr
system calls intercepted (LXD emulates the safe cases, so an unprivileged container can make
device nodes and set trusted xattrs, which overlayfs and dockerd's image unpacking do). Those keys
exist only where the server has the ``container_syscall_intercept`` API extension and the
kernel a seccomp listener (``environment.kernel_features.seccomp_listener``); elsewhere LXD
would refuse them, so they are left out (checked here: LXD 5.0.2 on kernel 6.x has both).
The cgroup hierarchies Docker needs inside are not mounted by LXD on a cgroup v1 host without
systemd in the container (ENGINES.md): that is the provisioning's job, not a config key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...profiles.allow import check_extras

if TYPE_CHECKING:
    from ...models import ContainerSpec

INTERCEPT_EXTENSION = "container_syscall_intercept"
INTERCEPT_KEYS = ("security.syscalls.intercept.mknod", "security.syscalls.intercept.setxattr")


def check(spec: ContainerSpec) -> None:
    """The spec's ``lxd`` section against the allowlist (exit 2 before any call)."""
    check_extras("lxd", spec.extras.get("lxd", {}))


def can_intercept(host_info: Mapping[str, Any]) -> bool:
    """Does this server take the syscall-intercept keys? (``GET /1.0``)"""
    features = (host_info.get("environment") or {}).get("kernel_features") or {}
    return INTERCEPT_EXTENSION in (host_info.get("api_extensions") or []) and \
        str(features.get("seccomp_listener", "")).lower() == "true"


def config(spec: ContainerSpec, host_info: Mapping[str, Any] | None) -> dict[str, str]:
    """Instance config keys for the spec's profile settings: raw keys first, then nesting (cman's
    own keys win: a profile's ``security.nesting = false`` cannot switch off ``nesting = true``)."""
    out = check_extras("lxd", spec.extras.get("lxd", {}))
    if spec.nesting:
        out["security.nesting"] = "true"
        if host_info is not None and can_intercept(host_info):
            out.update(dict.fromkeys(INTERCEPT_KEYS, "true"))
    return out
