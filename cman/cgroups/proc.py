"""Which cgroups a process belongs to, read from /proc/PID/cgroup on the host.

This is the only safe way to find a container's cgroup: names are not keys
(LXC and LXD both use lxc.payload.NAME, and lxc.monitor.NAME is the monitor,
not the container), and inside a container /proc/self/cgroup shows "/"
because of the cgroup namespace.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from . import _fs
from .errors import CgroupUnreadable, ProcessGone
from .layout import DEFAULT_PROC_ROOT


@dataclass(frozen=True)
class ProcessCgroups:
    """A process's CPU-relevant cgroup paths, relative to each hierarchy's root.

    None means the process has no such line (no v1 cpuacct hierarchy, or no
    v2 hierarchy mounted), not that it sits at the root.
    """

    pid: int
    v1_cpuacct: str | None
    v2: str | None


def parse_proc_cgroup(pid: int, text: str) -> ProcessCgroups:
    """Pick the v1 line whose controllers include cpuacct and the v2 "0::" line."""
    v1: str | None = None
    v2: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpuacct" in controllers.split(","):
            v1 = path
    return ProcessCgroups(pid=pid, v1_cpuacct=v1, v2=v2)


@functools.lru_cache(maxsize=4096)
def _proc_cgroup_path(proc_root: Path, pid: int) -> Path:
    return proc_root / str(pid) / "cgroup"


def resolve_cgroups(pid: int, proc_root: Path = DEFAULT_PROC_ROOT) -> ProcessCgroups:
    """Read proc_root/PID/cgroup.

    Raises ProcessGone when the process no longer exists, CgroupUnreadable for
    any other read failure.
    """
    path = _proc_cgroup_path(proc_root, pid)
    try:
        text = _fs.read_text(path)
    except (FileNotFoundError, ProcessLookupError) as err:
        # ENOENT: no /proc entry; ESRCH: the task exited between open and read.
        raise ProcessGone(pid) from err
    except OSError as err:
        raise CgroupUnreadable(path, _fs.reason_for(err), err.errno) from err
    return parse_proc_cgroup(pid, text)
