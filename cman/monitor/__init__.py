"""The CPU monitor daemon: samples every container at a fixed interval and serves the
figures as Prometheus metrics and as a JSON file that ``cman stats`` reads.

- :mod:`.config`: options, default paths (pidfile, run directory), ``--listen`` parsing;
- :mod:`.pidfile`: the pidfile, locked for the daemon's life ("running" is the kernel's fact);
- :mod:`.state`: the samples file that ``cman stats --no-stream`` answers from;
- :mod:`.metrics`: the Prometheus collector and the HTTP server (``/metrics``, ``/samples.json``);
- :mod:`.daemon`: the sampling loop, ``run`` in the foreground, ``start`` (double fork),
  ``stop`` and ``status``.

Every ``cman stats --no-stream`` imports this package to look for a running monitor, so
its top level stays light: no dataclasses (~2 ms each to create), and logging,
threading, prometheus_client and cman.stats are imported where used. Its names load on
first use (:mod:`cman._sys.lazy`): finding the monitor's state needs :mod:`.state` and
:mod:`.config`, never the daemon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._sys.lazy import lazy_attributes

if TYPE_CHECKING:
    from .config import (
        DEFAULT_HOST,
        DEFAULT_INTERVAL,
        DEFAULT_PORT,
        ENV_PIDFILE,
        ENV_RUN_DIR,
        MonitorConfig,
        MonitorError,
        MonitorRunning,
        default_pidfile,
        format_listen,
        is_loopback,
        parse_listen,
        run_dir,
        state_file_for,
    )
    from .daemon import Monitor, Status, run_foreground, start, status, stop
    from .pidfile import PidFile, lock_holder
    from .state import MonitorState, read_state, snapshot_document

_WHERE = {
    "DEFAULT_HOST": "config",
    "DEFAULT_INTERVAL": "config",
    "DEFAULT_PORT": "config",
    "ENV_PIDFILE": "config",
    "ENV_RUN_DIR": "config",
    "MonitorConfig": "config",
    "MonitorError": "config",
    "MonitorRunning": "config",
    "default_pidfile": "config",
    "format_listen": "config",
    "is_loopback": "config",
    "parse_listen": "config",
    "run_dir": "config",
    "state_file_for": "config",
    "Monitor": "daemon",
    "Status": "daemon",
    "run_foreground": "daemon",
    "start": "daemon",
    "status": "daemon",
    "stop": "daemon",
    "PidFile": "pidfile",
    "lock_holder": "pidfile",
    "MonitorState": "state",
    "read_state": "state",
    "snapshot_document": "state",
}

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_INTERVAL",
    "DEFAULT_PORT",
    "ENV_PIDFILE",
    "ENV_RUN_DIR",
    "Monitor",
    "MonitorConfig",
    "MonitorError",
    "MonitorRunning",
    "MonitorState",
    "PidFile",
    "Status",
    "default_pidfile",
    "format_listen",
    "is_loopback",
    "lock_holder",
    "parse_listen",
    "read_state",
    "run_dir",
    "run_foreground",
    "snapshot_document",
    "start",
    "state_file_for",
    "status",
    "stop",
]
__getattr__ = lazy_attributes(__name__, _WHERE)
