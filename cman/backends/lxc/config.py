"""A container's LXC config file, written by cman from the container's settings.

Every value is checked with :func:`check_lxc_value` (LXC must read it back exactly, on
one line) and every key must be an ``lxc.*`` key before anything is written, so no setting can add a line of its own
(an ``lxc.hook.*`` smuggled in after a newline). Of an image's config only the keys of
:data:`~.store.TEMPLATE_CONFIG_KEYS` are kept. The file is replaced atomically, and it
is the last file create writes: only then does ``lxc-ls`` see the container.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._sys import files as _files
from ...errors import InvalidValue, Unsupported
from ..base import Feature
from . import net
from .idmap import IdMap, host_has_apparmor
from .rootfs import OVERLAY_OPTIONS, rootfs_value
from .store import TEMPLATE_CONFIG_KEYS
from .tools import Paths, check_lxc_value, config_values

if TYPE_CHECKING:
    from ...cgroups import CgroupMounts
    from ...models import ContainerSpec
    from ...network import Network

COMMON_CONF = ("/usr/share/lxc/config/common.conf", "/usr/local/share/lxc/config/common.conf")
CPU_PERIOD_US = 100_000

Entry = tuple[str, str] | str
"""A (key, value) setting, or a comment line ("" for an empty line)."""

_CONFIG_KEY = re.compile(r"lxc(\.[a-z0-9_][a-z0-9_-]*)+")


def limit_settings(cpus: float | None, memory: int | None, mounts: CgroupMounts | None) -> list[tuple[str, str]]:
    """Config keys for --cpus/--memory on this host's cgroup layout.

    A controller mounted as cgroup v1 takes ``lxc.cgroup.*``; otherwise, when the v2 tree
    offers it, ``lxc.cgroup2.*``. Hybrid hosts mix both (this one: cpu and memory on v1).
    """
    out: list[tuple[str, str]] = []
    if cpus is None and memory is None:
        return out
    v1 = dict(mounts.v1) if mounts is not None else {}
    v2_controllers: set[str] = set()
    if mounts is not None and mounts.v2 is not None:
        with contextlib.suppress(OSError):
            v2_controllers = set((mounts.v2 / "cgroup.controllers").read_text().split())
    if cpus is not None:
        quota = max(1000, round(cpus * CPU_PERIOD_US))
        if "cpu" in v1:
            out += [("lxc.cgroup.cpu.cfs_period_us", str(CPU_PERIOD_US)), ("lxc.cgroup.cpu.cfs_quota_us", str(quota))]
        elif "cpu" in v2_controllers:
            out.append(("lxc.cgroup2.cpu.max", f"{quota} {CPU_PERIOD_US}"))
        else:
            raise Unsupported("lxc", str(Feature.CPU_LIMIT), "this host has no cpu cgroup controller")
    if memory is not None:
        if "memory" in v1:
            out.append(("lxc.cgroup.memory.limit_in_bytes", str(memory)))
        elif "memory" in v2_controllers:
            out.append(("lxc.cgroup2.memory.max", str(memory)))
        else:
            raise Unsupported("lxc", str(Feature.MEMORY_LIMIT), "this host has no memory cgroup controller")
    return out


def limits_of(spec: ContainerSpec) -> list[tuple[str, str]]:
    """The spec's --cpus/--memory for this host's cgroups (found only when a limit is asked)."""
    if spec.cpus is None and spec.memory is None:
        return []
    from ...cgroups import CgroupError, find_mounts

    try:
        mounts = find_mounts()
    except CgroupError as err:
        raise Unsupported("lxc", "limits", str(err)) from err
    return limit_settings(spec.cpus, spec.memory, mounts)


CLEARED = frozenset({"lxc.hook.post-stop"})
"""Keys cman may write empty, which clears the list the included files built."""
_SLEEP_ONLY = re.compile(r"sleep [0-9.]+s?")


def sleep_only_post_stop(common: str | None) -> bool:
    """Are the post-stop hooks that common.conf's ``common.conf.d`` adds nothing but a sleep?
    Debian's lxcfs ships ``lxc.reboot.hook`` (``sleep 0.5s``, time for lxcfs on a reboot),
    which LXC runs after every stop: half a second added to each ``run --rm`` and ``stop``
    of a container that is never rebooted by LXC (cman's restart is a stop and a start)."""
    if common is None:
        return False
    folder = Path(common).parent / "common.conf.d"
    try:
        configs = sorted(folder.glob("*.conf"))
    except OSError:
        return False
    hooks = [v for c in configs for _k, v in config_values(c, ("lxc.hook.post-stop",))]
    if not hooks:
        return False
    for hook in hooks:
        try:
            text = Path(hook).read_text()
        except (OSError, UnicodeDecodeError):
            return False
        body = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not body or not all(_SLEEP_ONLY.fullmatch(line) for line in body):
            return False
    return True


def render_config(entries: Sequence[Entry]) -> str:
    """Config text from (key, value) pairs and comment strings; every value is checked
    first (:func:`check_lxc_value`), so each entry is exactly one line."""
    lines: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            if entry:
                check_lxc_value("LXC config comment", f"# {entry}")
            lines.append(f"# {entry}" if entry else "")
            continue
        key, value = entry
        if not _CONFIG_KEY.fullmatch(key):
            raise InvalidValue("LXC config key", key, "not an lxc.* key")
        if not value and key in CLEARED:
            lines.append(f"{key} =")  # LXC: an empty value clears what the includes set
            continue
        lines.append(f"{key} = {check_lxc_value(key, value)}")
    return "\n".join(lines) + "\n"


def network_settings(paths: Paths, network: Network | None, address: str | None) -> list[Entry]:
    """One veth on the network's bridge with the allocated address, or loopback only."""
    if network is None or address is None or not network.bridge or not network.subnet:
        return list(net.EMPTY_NETWORK)
    hook = None if network.icc else paths.dir / net.HOOK_NAME
    prefixlen = int(network.subnet.rpartition("/")[2])
    return net.veth_entries(network.name, network.bridge, address, prefixlen, network.gateway, hook,
                            net.new_hwaddr())


def security_entries(idmap: IdMap | None, *, apparmor: bool, common: str | None) -> list[Entry]:
    """The confinement of a container: unprivileged (``idmap``) or privileged (None).

    - Unprivileged: LXC's ``userns.conf`` (beside ``common.conf``), the id map, and where
      the host has AppArmor LXC's generated profile.
    - Privileged (``--privileged``): no id map, and where the host has AppArmor no
      profile either (``unconfined``).

    Without AppArmor on the host no profile key is written at all (LXC would only warn).
    """
    entries: list[Entry] = []
    if idmap is None:
        entries.append("privileged (--privileged): no user namespace" + (", no AppArmor profile" if apparmor else ""))
        if apparmor:
            entries.append(("lxc.apparmor.profile", "unconfined"))
        return entries
    userns = os.path.join(os.path.dirname(common), "userns.conf") if common else None
    entries.append("unprivileged: the container's ids 0-65535 are the host's subordinate ids")
    if userns and os.path.isfile(userns):
        entries.append(("lxc.include", userns))
    entries += idmap.entries()
    if apparmor:
        entries.append(("lxc.apparmor.profile", "generated"))
    return entries


NESTING_CGROUPS = ("lxc.mount.auto", "cgroup:rw:force")
"""The container's own cgroup hierarchies, mounted writable inside it. Without ``:force`` LXC
skips cgroup automounts in a container with a cgroup namespace (this host: ``cgroup:rw`` and
``cgroup-full:rw`` mounted nothing, ENGINES.md); with it, checked here (LXC 5.0.2, hybrid
cgroup v1 host, unprivileged container): a tmpfs on /sys/fs/cgroup and one hierarchy per
controller (cpu, memory, devices, ..., name=systemd, unified), each rooted at the container's
own cgroup and writable by its root, which is what dockerd needs."""
DOCKER_DEVICES = ("c 10:200 rwm",)
"""Devices Docker's containers get by default that LXC's common.conf does not allow: /dev/net/tun.
The rest of Docker's default list (null, zero, full, random, urandom, tty, console, ptmx, pts,
mknod of any node) common.conf already allows, and a nested cgroup may only narrow its parent's."""


def nesting_entries(common: str | None, *, unprivileged: bool, apparmor: bool) -> list[Entry]:
    """What Docker inside needs (``ContainerSpec.nesting``): LXC's nesting.conf (proc and sys
    mounted again where a nested container's runtime can mount them), the cgroup hierarchies
    inside, /dev/net/tun, and AppArmor's nesting rules where the host has AppArmor. Written before
    the confinement entries, so nesting.conf's AppArmor profile gives way to cman's."""
    nesting = os.path.join(os.path.dirname(common), "nesting.conf") if common else None
    if nesting is None or not os.path.isfile(nesting):
        raise Unsupported("lxc", str(Feature.NESTING), "LXC's nesting.conf is not installed beside common.conf")
    entries: list[Entry] = ["nesting: containers inside (Docker): cgroups mounted inside, /dev/net/tun",
                            ("lxc.include", nesting), NESTING_CGROUPS]
    for device in DOCKER_DEVICES:
        entries += [("lxc.cgroup.devices.allow", device), ("lxc.cgroup2.devices.allow", device)]
    if apparmor and unprivileged:
        entries.append(("lxc.apparmor.allow_nesting", "1"))
    return entries


def extra_entries(spec: ContainerSpec) -> list[Entry]:
    """The spec's ``lxc`` section (raw keys of the allowlist, :mod:`cman.profiles.allow`)."""
    from ...profiles.allow import check_extras

    extras = check_extras("lxc", spec.extras.get("lxc", {}))
    return ["", "from profiles", *extras.items()] if extras else []


def config_entries(paths: Paths, spec: ContainerSpec, image: dict[str, Any], limits: list[tuple[str, str]],
                   network: Network | None = None, address: str | None = None, *,
                   idmap: IdMap | None = None, apparmor: bool | None = None,
                   lower: Path | None = None) -> list[Entry]:
    """Everything a container's config holds, from its spec, its image and its network.

    ``idmap`` is required unless the spec is privileged; ``apparmor`` defaults to what the
    host has; ``lower`` is the image's rootfs under the container's overlay (:mod:`.rootfs`),
    None for a plain rootfs.
    """
    if idmap is None and not spec.privileged:
        raise ValueError("an unprivileged container needs an id map")
    common = next((c for c in COMMON_CONF if os.path.isfile(c)), None)
    entries: list[Entry] = [
        "Written by cman (LXC backend) from the container's settings; cman.json holds the rest.",
    ]
    if common:
        entries.append(("lxc.include", common))
        if sleep_only_post_stop(common):
            entries += ["the post-stop hooks included above only sleep (lxcfs, for reboots): cleared",
                        ("lxc.hook.post-stop", "")]
    apparmor = host_has_apparmor() if apparmor is None else apparmor
    if spec.nesting:
        entries += nesting_entries(common, unprivileged=not spec.privileged, apparmor=apparmor)
    entries += security_entries(None if spec.privileged else idmap, apparmor=apparmor, common=common)
    if image.get("architecture"):
        entries.append(("lxc.arch", str(image["architecture"])))
    entries += [
        "",
        ("lxc.rootfs.path", rootfs_value(paths.rootfs, lower)),
        *([("lxc.rootfs.options", OVERLAY_OPTIONS)] if lower is not None else []),
        ("lxc.uts.name", paths.name),
        ("lxc.console.logfile", str(paths.console)),
        ("lxc.log.file", str(paths.lxclog)),
        "",
        *network_settings(paths, network, address),
    ]
    if limits:
        entries += ["", "limits", *limits]
    entries += extra_entries(spec)
    image_config = [(str(k), str(v)) for k, v in image.get("lxc_config", []) if k in TEMPLATE_CONFIG_KEYS]
    if image_config:
        entries += ["", "from the image", *image_config]
    if spec.auto_remove:
        entries += ["", "--rm: LXC destroys the container when it stops", ("lxc.ephemeral", "1")]
    return entries


def write_config(paths: Paths, config: str) -> None:
    """Replace the container's config atomically (lxc-start may read it at any time)."""
    _files.atomic_write(paths.config, config)


def mapped_root(config: Path) -> tuple[int, int] | None:
    """The host (uid, gid) of the container's root from the config's ``lxc.idmap`` lines;
    None for a container without a user namespace (its root is the host's)."""
    ids: dict[str, int] = {}
    for _key, value in config_values(config, ("lxc.idmap",)):
        parts = value.split()
        if len(parts) == 4 and parts[0] in ("u", "g") and parts[1] == "0" and parts[2].isascii() and parts[2].isdigit():
            ids.setdefault(parts[0], int(parts[2]))
    if "u" in ids and "g" in ids:
        return ids["u"], ids["g"]
    return None
