"""The samples file: the latest snapshot, replaced atomically after every sample.

``cman stats --no-stream`` answers from it, without touching any engine, while the
monitor runs (its pidfile is locked) and the file is fresh.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .config import MonitorConfig, MonitorError, default_pidfile, format_listen, state_file_for
from .pidfile import lock_holder

if TYPE_CHECKING:
    from ..stats import Snapshot

STATE_FORMAT = 1


def snapshot_document(snapshot: Snapshot, config: MonitorConfig, started: float) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "pid": os.getpid(),
        "listen": format_listen(config.listen),
        "interval_s": config.interval,
        "started": started,
        "timestamp": snapshot.timestamp,
        "duration_s": round(snapshot.duration_s, 6),
        "backends": list(snapshot.backends),
        "errors": dict(snapshot.errors),
        "containers": [r.to_dict() for r in snapshot.rows],
    }


class MonitorState(NamedTuple):
    """What a running monitor last published; rows are ``cman stats --json`` objects."""

    pid: int
    listen: str
    interval_s: float
    started: float
    timestamp: float
    backends: tuple[str, ...]
    errors: dict[str, str]
    rows: tuple[dict[str, Any], ...]

    @property
    def age_s(self) -> float:
        return time.time() - self.timestamp

    @property
    def fresh(self) -> bool:
        """Sampled within two intervals (plus a second of slack)."""
        return -1.0 <= self.age_s <= 2 * self.interval_s + 1.0


def read_state(pidfile: Path | None = None) -> MonitorState | None:
    """The running monitor's latest samples, or None (no monitor, not ours, unreadable).

    One file read and one lock query: no engine is contacted.
    """
    pidfile = pidfile or default_pidfile()
    try:
        with open(state_file_for(pidfile), "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None
    try:
        if doc.get("format") != STATE_FORMAT:
            return None
        rows = tuple(doc.get("containers") or ())
        for row in rows:
            row["sampled_by"] = "monitor"
        state = MonitorState(
            pid=int(doc["pid"]),
            listen=str(doc.get("listen", "")),
            interval_s=float(doc["interval_s"]),
            started=float(doc.get("started", 0)),
            timestamp=float(doc["timestamp"]),
            backends=tuple(doc.get("backends") or ()),
            errors=dict(doc.get("errors") or {}),
            rows=rows,
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    try:
        holder = lock_holder(pidfile)
    except MonitorError:
        return None
    if holder is None or (holder > 0 and holder != state.pid):
        return None  # a leftover of a monitor that died without cleaning up
    return state
