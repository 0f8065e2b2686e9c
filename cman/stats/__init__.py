"""CPU samples for containers across backends: the library behind ``cman stats``,
``cman top`` and the monitor daemon (:mod:`.collector` takes them, :mod:`.rows` holds them).

The names load on first use (PEP 562): ``stats --no-stream`` answered by a monitor needs
none of the collector's dataclasses or cgroup code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._sys.lazy import lazy_attributes

if TYPE_CHECKING:
    from .collector import Backends, BackendSource, Selection, StatsCollector
    from .rows import (
        STATUSES,
        STOPPED,
        ContainerStats,
        Found,
        Key,
        Snapshot,
        Target,
        stats_from_sample,
        stopped_stats,
    )

_WHERE = {
    **dict.fromkeys(("Backends", "BackendSource", "Selection", "StatsCollector"), "collector"),
    **dict.fromkeys(("STATUSES", "STOPPED", "ContainerStats", "Found", "Key", "Snapshot", "Target",
                     "stats_from_sample", "stopped_stats"), "rows"),
}

__all__ = [
    "STATUSES",
    "STOPPED",
    "BackendSource",
    "Backends",
    "ContainerStats",
    "Found",
    "Key",
    "Selection",
    "Snapshot",
    "StatsCollector",
    "Target",
    "stats_from_sample",
    "stopped_stats",
]

__getattr__ = lazy_attributes(__name__, _WHERE)
