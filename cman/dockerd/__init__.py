"""Docker daemon settings (``cman engine configure docker``): a tool for the host that runs
dockerd, not a backend. It edits daemon.json and restarts the local dockerd; Docker itself
is reached only through the backend registry and the contract.

- :mod:`.settings`: the managed keys of daemon.json, validated, merged, diffed, written
  atomically;
- :mod:`.process`: the running dockerd (found by pidfile or by name), its restart with the
  same command line, and :func:`configure`, the verb that ties both together.
"""

from __future__ import annotations

from .process import (
    DEFAULT_PIDFILE,
    ENV_PIDFILE,
    FALLBACK_LOG,
    FLAGS,
    DaemonProcess,
    Outcome,
    configure,
    docker_answers,
    find_dockerd,
    needs_restart,
    pidfiles,
    read_process,
    restart_dockerd,
    start_like,
    systemd_running,
    wait_for,
    wrapper_pidfiles,
)
from .settings import (
    DEFAULT_PATH,
    KEYS,
    DaemonSettings,
    Plan,
    check_bip,
    check_bip_free,
    check_mirror,
    merge,
    plan,
    read_config,
    render,
    restore,
    unified_diff,
    write_config,
)

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_PIDFILE",
    "ENV_PIDFILE",
    "FALLBACK_LOG",
    "FLAGS",
    "KEYS",
    "DaemonProcess",
    "DaemonSettings",
    "Outcome",
    "Plan",
    "check_bip",
    "check_bip_free",
    "check_mirror",
    "configure",
    "docker_answers",
    "find_dockerd",
    "merge",
    "needs_restart",
    "pidfiles",
    "plan",
    "read_config",
    "read_process",
    "render",
    "restart_dockerd",
    "restore",
    "start_like",
    "systemd_running",
    "unified_diff",
    "wait_for",
    "wrapper_pidfiles",
    "write_config",
]
