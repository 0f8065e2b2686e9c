"""CPU accounting from cgroup v1 and v2 files, independent of any container engine.

Callers pass the host PID of a container's init process; the cgroup is
resolved from /proc/PID/cgroup, never guessed from a container name.

    sampler = CpuSampler()
    sampler.sample("web", 4242)        # status FIRST, rates None
    s = sampler.sample("web", 4242)    # status OK, s.cpu_percent (100 = one CPU)
"""

from __future__ import annotations

from .counters import (
    CgroupReader,
    CpuCounters,
    Prefer,
    clock_ticks_per_second,
    default_reader,
    read_cpu_counters,
    read_v1_counters,
    read_v2_counters,
)
from .errors import CgroupError, CgroupUnreadable, CgroupWarning, ProcessGone
from .layout import (
    CgroupLayout,
    CgroupMounts,
    detect_layout,
    find_mounts,
    parse_mounts,
    probe_files,
)
from .proc import ProcessCgroups, parse_proc_cgroup, resolve_cgroups
from .sampler import (
    CpuSample,
    CpuSampler,
    SampleStatus,
    online_cpu_count,
    parse_cpu_list,
    sample_once,
)

__all__ = [
    "CgroupError",
    "CgroupLayout",
    "CgroupMounts",
    "CgroupReader",
    "CgroupUnreadable",
    "CgroupWarning",
    "CpuCounters",
    "CpuSample",
    "CpuSampler",
    "Prefer",
    "ProcessCgroups",
    "ProcessGone",
    "SampleStatus",
    "clock_ticks_per_second",
    "default_reader",
    "detect_layout",
    "find_mounts",
    "online_cpu_count",
    "parse_cpu_list",
    "parse_mounts",
    "parse_proc_cgroup",
    "probe_files",
    "read_cpu_counters",
    "read_v1_counters",
    "read_v2_counters",
    "resolve_cgroups",
    "sample_once",
]
