"""Container cgroups found without asking an engine: what makes a sample cost a file read.

Two shortcuts, each checked against the engines by the integration tests, each with a
correct fallback in its caller:

- :func:`read_parents` reads the counters of every cgroup under the parents where
  engines put their containers (``docker/*``, ``lxc.payload.*``, ...). ``stats
  --no-stream`` takes its first reading this way *before* the engines' listings
  arrive, so the listings run during the interval instead of before it. A reading is
  keyed by (hierarchy, cgroup path): it is matched to a container only through that
  container's init PID (``/proc/PID/cgroup``), never through a name.
- :func:`lxc_monitors` finds the init PID of every running LXC and LXD container from
  their ``[lxc monitor] LXCPATH NAME`` processes (in ``lxc.monitor.*`` cgroups): three
  small reads per container instead of ``lxc-ls -f`` (about 2.5 ms of CPU each) or
  LXD's ``recursion=2`` state. The LXC path in the title tells LXD's containers
  (``$LXD_DIR/containers``) from raw LXC's, whose cgroup names can be the same.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from . import _fs
from .counters import CgroupReader, CpuCounters, read_v1_counters, read_v2_counters
from .errors import CgroupError, CgroupUnreadable

MONITOR_TITLE = "[lxc monitor] "
"""How liblxc titles the process that supervises a running container."""

Reading = tuple[str, str]
"""(hierarchy "v1" or "v2", cgroup path as /proc/PID/cgroup writes it)."""


def _children(root: Path, pattern: str) -> Iterable[str]:
    """Relative cgroup paths (with a leading slash) under ``root`` that match ``pattern``
    (``parent/glob`` or ``glob``; one level of glob per part, no recursion)."""
    parent, _, leaf = pattern.rpartition("/")
    base = root / parent if parent else root
    try:
        with os.scandir(base) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return ()
    prefix = f"/{parent}/" if parent else "/"
    return [prefix + n for n in names if fnmatch.fnmatchcase(n, leaf)]


def read_parents(reader: CgroupReader, patterns: Iterable[str],
                 clock: Callable[[], int] = time.monotonic_ns) -> dict[Reading, tuple[int, CpuCounters]]:
    """(when, counters) of every cgroup matching ``patterns`` in the v2 and the v1 cpuacct
    hierarchies; ``when`` is ``clock()`` just before the read.

    A cgroup that vanishes or cannot be read is left out: the caller reads it again
    through its PID, which says why.
    """
    try:
        mounts = reader.mounts
    except CgroupError:
        return {}
    roots: list[tuple[str, Path]] = []
    if mounts.v2 is not None:
        roots.append(("v2", mounts.v2))
    if "cpuacct" in mounts.v1:
        roots.append(("v1", mounts.v1["cpuacct"]))
    out: dict[Reading, tuple[int, CpuCounters]] = {}
    for source, root in roots:
        read = read_v2_counters if source == "v2" else read_v1_counters
        for pattern in patterns:
            for cgroup in _children(root, pattern):
                try:
                    out[(source, cgroup)] = (clock(), read(root / cgroup.lstrip("/"), cgroup))
                except CgroupUnreadable:
                    continue
    return out


def population(reader: CgroupReader, patterns: Iterable[str]) -> frozenset[str]:
    """The cgroups matching ``patterns`` in one hierarchy (v2 if mounted, else v1 cpuacct):
    directory listings only, so a caller can tell cheaply whether containers came or went."""
    try:
        mounts = reader.mounts
    except CgroupError:
        return frozenset()
    root = mounts.v2 if mounts.v2 is not None else mounts.v1.get("cpuacct")
    if root is None:
        return frozenset()
    return frozenset(c for pattern in patterns for c in _children(root, pattern))


def parse_monitor_title(cmdline: bytes) -> tuple[str, str] | None:
    """``[lxc monitor] LXCPATH NAME`` -> (LXCPATH, NAME); None for any other process.
    Container names have no spaces (every engine refuses them); an LXC path may."""
    text = cmdline.split(b"\0", 1)[0].decode("utf-8", "replace")
    if not text.startswith(MONITOR_TITLE):
        return None
    lxcpath, sep, name = text[len(MONITOR_TITLE):].rstrip().rpartition(" ")
    return (lxcpath, name) if sep and lxcpath and name else None


def _first_pid(text: str) -> int | None:
    first = text.split(None, 1)[:1]
    return int(first[0]) if first and first[0].isdigit() else None


def lxc_monitors(reader: CgroupReader) -> dict[tuple[str, str], int | None]:
    """(LXC path, container name) -> host PID of the container's init, for every container
    of liblxc (raw LXC and LXD) that has a monitor process in this host's cgroups.

    The PID is None while the monitor has no child (starting, stopping): callers ask the
    engine about those. A monitor whose files vanish while they are read is left out.
    """
    try:
        mounts = reader.mounts
    except CgroupError:
        return {}
    roots = [p for p in (mounts.v1.get("cpuacct"), mounts.v2, *mounts.v1.values()) if p is not None]
    proc = reader.proc_root
    out: dict[tuple[str, str], int | None] = {}
    for root in dict.fromkeys(roots):  # the first hierarchy that has monitors is enough
        for cgroup in _children(root, "lxc.monitor.*"):
            try:
                monitor = _first_pid(_fs.read_text(root / cgroup.lstrip("/") / "cgroup.procs"))
                if monitor is None:
                    continue
                where = parse_monitor_title(_read_bytes(proc / str(monitor) / "cmdline"))
                if where is None:
                    continue
                init = _first_pid(_fs.read_text(proc / str(monitor) / "task" / str(monitor) / "children"))
            except OSError:
                continue
            out[where] = init
        if out:
            break
    return out


def frozen(reader: CgroupReader, pid: int) -> bool:
    """Is ``pid``'s cgroup frozen (v1 ``freezer.state``, v2 ``cgroup.events``)? False when
    it cannot be told, as for a process that just exited."""
    try:
        lines = _fs.read_text(reader.proc_root / str(pid) / "cgroup").splitlines()
        mounts = reader.mounts
    except (OSError, CgroupError):
        return False
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        try:
            if "freezer" in controllers.split(",") and "freezer" in mounts.v1:
                state = _fs.read_text(mounts.v1["freezer"] / path.lstrip("/") / "freezer.state")
                return state.strip() == "FROZEN"
            if hierarchy == "0" and mounts.v2 is not None and path.strip("/"):
                events = _fs.read_text(mounts.v2 / path.lstrip("/") / "cgroup.events")
                if "frozen 1" in events.splitlines():
                    return True
        except OSError:
            continue
    return False


def _read_bytes(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)
