"""Cumulative CPU counters of one cgroup, from cgroup v1 or v2 files.

Units differ between versions and are easy to mix up, so every field says its
unit in its name and everything is converted to nanoseconds here:

- v1 cpuacct.usage, cpuacct.usage_user, cpuacct.usage_sys: nanoseconds
  (usage_user/usage_sys arrived in Linux 4.6; older kernels only have
  cpuacct.stat, in USER_HZ ticks);
- v2 cpu.stat usage_usec, user_usec, system_usec: microseconds (a core file
  since Linux 4.15, present even when the cpu controller is not enabled).

The user/system split is sampled at timer ticks in both versions. v2 scales
it so user + system matches usage; v1 does not, so there user + system can
differ from usage by a few percent. usage itself is exact in both.
"""

from __future__ import annotations

import errno
import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import _fs
from .errors import CgroupUnreadable, CgroupWarning
from .layout import (
    DEFAULT_CGROUP_ROOT,
    DEFAULT_PROC_ROOT,
    CgroupLayout,
    CgroupMounts,
    find_mounts,
)
from .proc import ProcessCgroups, resolve_cgroups

Prefer = Literal["auto", "v1", "v2"]

_warned: set[str] = set()


def _warn_once(kind: str, message: str) -> None:
    """Warn about a degraded counter once per kind, not once per container per tick."""
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, CgroupWarning, stacklevel=3)


@functools.cache
def clock_ticks_per_second() -> int:
    """USER_HZ, the unit of cpuacct.stat (usually 100, whatever the kernel HZ)."""
    return int(os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True)
class CpuCounters:
    """CPU time a cgroup has used since it was created, in nanoseconds.

    user_ns/system_ns are None when this kernel does not report them: unknown
    is not zero.
    """

    usage_ns: int
    user_ns: int | None
    system_ns: int | None
    source: str  # "v1" or "v2"
    cgroup: str  # as in /proc/PID/cgroup, relative to the hierarchy root
    directory: Path  # the cgroup directory the files were read from


def _parse_int(path: Path, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError as err:
        raise CgroupUnreadable(path, f"expected an integer, got {text.strip()[:40]!r}") from err


def _parse_keyed(path: Path, text: str) -> dict[str, int]:
    """Parse "key value" lines (cpu.stat, cpuacct.stat); skip lines that are not."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                values[parts[0]] = int(parts[1])
            except ValueError:
                continue
    if not values:
        raise CgroupUnreadable(path, "no 'key value' lines found")
    return values


def _read_optional_ns(path: Path) -> int | None:
    """Read a nanosecond counter that older kernels lack; None when missing."""
    try:
        return _parse_int(path, _fs.read_cgroup_file(path))
    except CgroupUnreadable as err:
        if err.errno == errno.ENOENT:
            return None
        raise


def read_v1_counters(directory: Path, cgroup: str = "") -> CpuCounters:
    """Read a v1 cpuacct cgroup directory."""
    usage_path = _child(directory, "cpuacct.usage")
    usage_ns = _parse_int(usage_path, _fs.read_cgroup_file(usage_path))
    user_ns = _read_optional_ns(_child(directory, "cpuacct.usage_user"))
    system_ns = _read_optional_ns(_child(directory, "cpuacct.usage_sys"))
    if user_ns is None or system_ns is None:
        user_ns, system_ns = _v1_ticks_fallback(directory)
    return CpuCounters(usage_ns, user_ns, system_ns, "v1", cgroup, directory)


def _v1_ticks_fallback(directory: Path) -> tuple[int | None, int | None]:
    """Pre-4.6 kernels: user/system from cpuacct.stat, converted from USER_HZ ticks."""
    stat_path = _child(directory, "cpuacct.stat")
    try:
        ticks = _parse_keyed(stat_path, _fs.read_cgroup_file(stat_path))
    except CgroupUnreadable as err:
        _warn_once(
            "v1-user-system",
            f"{directory}: no cpuacct.usage_user/usage_sys and {err.reason} for"
            " cpuacct.stat; user/system CPU time will be None",
        )
        return None, None
    _warn_once(
        "v1-ticks",
        f"{directory}: no cpuacct.usage_user/usage_sys (kernel < 4.6?); using"
        " cpuacct.stat in USER_HZ ticks, coarser than nanoseconds",
    )
    hz = clock_ticks_per_second()
    user = ticks.get("user")
    system = ticks.get("system")
    return (
        None if user is None else user * 1_000_000_000 // hz,
        None if system is None else system * 1_000_000_000 // hz,
    )


def read_v2_counters(directory: Path, cgroup: str = "") -> CpuCounters:
    """Read a v2 cgroup directory's cpu.stat."""
    path = _child(directory, "cpu.stat")
    stat = _parse_keyed(path, _fs.read_cgroup_file(path))
    usage_usec = stat.get("usage_usec")
    if usage_usec is None:
        raise CgroupUnreadable(path, "no usage_usec field")
    user_usec = stat.get("user_usec")
    system_usec = stat.get("system_usec")
    if user_usec is None or system_usec is None:
        _warn_once(
            "v2-user-system",
            f"{path}: no user_usec/system_usec; user/system CPU time will be None",
        )
    return CpuCounters(
        usage_ns=usage_usec * 1000,
        user_ns=None if user_usec is None else user_usec * 1000,
        system_ns=None if system_usec is None else system_usec * 1000,
        source="v2",
        cgroup=cgroup,
        directory=directory,
    )


def _is_root(cgroup: str | None) -> bool:
    return cgroup is not None and cgroup.strip("/") == ""


# Path building costs more than the reads themselves; containers keep their
# cgroup for life, so cache it (bounded, for hosts with container churn).
@functools.lru_cache(maxsize=4096)
def _join(mount: Path, cgroup: str) -> Path:
    return mount / cgroup.lstrip("/") if cgroup.strip("/") else mount


@functools.lru_cache(maxsize=4096)
def _child(directory: Path, name: str) -> Path:
    return directory / name


class CgroupReader:
    """Reads CPU counters for host PIDs, with the mount table looked up once.

    Both roots are overridable so tests (and callers in unusual mount setups)
    can point it at another tree. The mount table is cached for the reader's
    life: create a new reader if cgroup filesystems are remounted.
    """

    def __init__(
        self, root: Path = DEFAULT_CGROUP_ROOT, proc_root: Path = DEFAULT_PROC_ROOT
    ) -> None:
        self.root = root
        self.proc_root = proc_root
        self._mounts: CgroupMounts | None = None

    @property
    def mounts(self) -> CgroupMounts:
        """The host's cgroup mounts; raises CgroupError if none are found."""
        if self._mounts is None:
            self._mounts = find_mounts(self.root, self.proc_root)
        return self._mounts

    @property
    def layout(self) -> CgroupLayout:
        """V1, V2 or HYBRID."""
        return self.mounts.layout

    def resolve(self, pid: int) -> ProcessCgroups:
        """The process's cgroups; raises ProcessGone if it has exited."""
        return resolve_cgroups(pid, self.proc_root)

    def read(self, pid: int, prefer: Prefer = "auto") -> CpuCounters:
        """Counters of the cgroup that holds `pid`.

        "auto" reads v2 when the process has a v2 cgroup with cpu.stat, else
        v1. It skips a v2 path of "/" when v1 has a real one: a manager that
        only creates v1 cgroups (older Docker on a hybrid host) leaves its
        processes at the v2 root, whose counters are the whole host's.
        Raises ProcessGone or CgroupUnreadable.
        """
        cgroups = self.resolve(pid)
        mounts = self.mounts
        v1_path, v2_path = cgroups.v1_cpuacct, cgroups.v2
        v1_mount = mounts.v1.get("cpuacct")
        v1_dir = None if v1_mount is None or v1_path is None else _join(v1_mount, v1_path)
        if prefer != "v1" and mounts.v2 is not None and v2_path is not None:
            host_wide = _is_root(v2_path) and v1_dir is not None and not _is_root(v1_path)
            if prefer == "v2" or not host_wide:
                try:
                    return read_v2_counters(_join(mounts.v2, v2_path), v2_path)
                except CgroupUnreadable as err:
                    # Kernels before 4.15 have no core cpu.stat: fall back to v1.
                    if prefer == "v2" or v1_dir is None or err.errno != errno.ENOENT:
                        raise
        elif prefer == "v2":
            raise self._unavailable(pid, "v2")
        if v1_dir is None or v1_path is None:
            raise self._unavailable(pid, prefer)
        return read_v1_counters(v1_dir, v1_path)

    def _unavailable(self, pid: int, prefer: Prefer) -> CgroupUnreadable:
        """Say which hierarchy or /proc line is missing for the requested version."""
        mounts = self.mounts
        proc_file = self.proc_root / str(pid) / "cgroup"
        if prefer == "v2":
            if mounts.v2 is None:
                return CgroupUnreadable(self.root, "no cgroup v2 hierarchy mounted here")
            return CgroupUnreadable(proc_file, "process has no v2 ('0::') line")
        if prefer == "v1" and "cpuacct" not in mounts.v1:
            return CgroupUnreadable(self.root, "no cgroup v1 cpuacct hierarchy mounted here")
        if prefer == "v1":
            return CgroupUnreadable(proc_file, "process has no v1 cpuacct line")
        return CgroupUnreadable(
            proc_file,
            "process has neither a v2 cgroup nor a v1 cpuacct cgroup in mounted hierarchies",
        )


@functools.cache
def default_reader() -> CgroupReader:
    """A shared reader for the real host, so the mount table is parsed once."""
    return CgroupReader()


def read_cpu_counters(
    pid: int, prefer: Prefer = "auto", *, reader: CgroupReader | None = None
) -> CpuCounters:
    """Counters of the cgroup holding host PID `pid` (see CgroupReader.read)."""
    return (reader or default_reader()).read(pid, prefer)
