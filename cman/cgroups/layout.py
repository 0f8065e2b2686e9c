"""Which cgroup hierarchies a host has, and where they are mounted.

Hosts differ: pure v1 (older distros, Docker's cgroupfs driver), pure v2
(current distros) and hybrid (v1 controllers plus a v2 tree, often at
/sys/fs/cgroup/unified). CPU counters live in different files in each, so the
readers need the mount points, not just a version number.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import _fs
from .errors import CgroupError

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_PROC_ROOT = Path("/proc")

# v1 controller names; a v1 mount whose options hold none of these (for example
# systemd's "name=systemd" hierarchy) carries no resource counters.
V1_CONTROLLERS = frozenset(
    {
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls",
        "blkio", "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc",
    }
)

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class CgroupLayout(enum.StrEnum):
    """How cgroups are mounted on the host (a string, for JSON output)."""

    V1 = "v1"
    V2 = "v2"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class CgroupMounts:
    """Where each hierarchy lives; the readers join cgroup paths onto these."""

    layout: CgroupLayout
    v1: Mapping[str, Path] = field(default_factory=dict)  # controller -> mount point
    v2: Path | None = None
    source: str = "mounts"  # "mounts" when parsed, "probe" when guessed from files


def _unescape(field_: str) -> str:
    """Undo the kernel's octal escapes in mounts fields (a space is backslash-040)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field_)


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _layout_of(v1: dict[str, Path], v2: Path | None) -> CgroupLayout | None:
    if v1 and v2 is not None:
        return CgroupLayout.HYBRID
    if v1:
        return CgroupLayout.V1
    if v2 is not None:
        return CgroupLayout.V2
    return None


def parse_mounts(text: str, root: Path = DEFAULT_CGROUP_ROOT) -> CgroupMounts | None:
    """Find cgroup mounts at or under `root` in /proc/self/mounts-style text.

    Returns None when there are none, so the caller can fall back to probing.
    Only mounts under `root` count: the same hierarchy can be bind-mounted
    elsewhere (container rootfs, lxcfs), and `root` is where we read from.
    """
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        fstype, mountpoint = parts[2], Path(_unescape(parts[1]))
        if fstype not in ("cgroup", "cgroup2") or not _is_under(mountpoint, root):
            continue
        if fstype == "cgroup2":
            v2 = v2 or mountpoint
            continue
        for option in parts[3].split(","):
            if option in V1_CONTROLLERS:
                v1.setdefault(option, mountpoint)
    layout = _layout_of(v1, v2)
    if layout is None:
        return None
    return CgroupMounts(layout=layout, v1=v1, v2=v2, source="mounts")


def probe_files(root: Path = DEFAULT_CGROUP_ROOT) -> CgroupMounts | None:
    """Guess the layout from files under `root` when no mounts table is readable.

    v2 marks its directories with cgroup.controllers; a v1 hierarchy is a
    directory named after its controllers (possibly comma-joined, as in
    "cpu,cpuacct", with "cpu" and "cpuacct" symlinks to it).
    """
    v2: Path | None = None
    if (root / "cgroup.controllers").is_file():
        v2 = root
    elif (root / "unified" / "cgroup.controllers").is_file():
        v2 = root / "unified"
    v1: dict[str, Path] = {}
    if v2 != root:
        try:
            children = sorted(root.iterdir())
        except OSError:
            children = []
        for child in children:
            if not (child / "cgroup.procs").is_file() or (child / "cgroup.controllers").exists():
                continue
            for name in child.name.split(","):
                if name in V1_CONTROLLERS:
                    v1.setdefault(name, child)
    layout = _layout_of(v1, v2)
    if layout is None:
        return None
    return CgroupMounts(layout=layout, v1=v1, v2=v2, source="probe")


def find_mounts(
    root: Path = DEFAULT_CGROUP_ROOT, proc_root: Path = DEFAULT_PROC_ROOT
) -> CgroupMounts:
    """Locate the cgroup hierarchies: parse proc_root/self/mounts, else probe `root`.

    Raises CgroupError when neither finds a cgroup filesystem under `root`.
    """
    mounts_file = proc_root / "self" / "mounts"
    try:
        found = parse_mounts(_fs.read_text(mounts_file), root)
    except OSError:
        found = None
    if found is None:
        found = probe_files(root)
    if found is None:
        raise CgroupError(
            f"no cgroup filesystem found under {root} (checked {mounts_file} and the files);"
            " is /sys/fs/cgroup mounted?"
        )
    return found


def detect_layout(
    root: Path = DEFAULT_CGROUP_ROOT, proc_root: Path = DEFAULT_PROC_ROOT
) -> CgroupLayout:
    """Say whether the host is cgroup v1, v2 or hybrid."""
    return find_mounts(root, proc_root).layout
