"""CPU samples for containers across backends: the library behind ``cman stats``,
``cman top`` and the monitor daemon (:mod:`.collector` takes them, :mod:`.rows` holds them)."""

from __future__ import annotations

from .collector import Backends, BackendSource, Selection, StatsCollector
from .rows import (
    STATUSES,
    STOPPED,
    ContainerStats,
    Found,
    Key,
    Snapshot,
    Target,
    parse_interval,
    stats_from_sample,
    stopped_stats,
)

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
    "parse_interval",
    "stats_from_sample",
    "stopped_stats",
]
