"""What a killed cman leaves on LXD, found without guessing: pure parts of ``prune_leftovers``.

Two kinds, each tied to the cman process that made it, by PID and that process's start
time (``/proc/PID/stat`` field 22, clock ticks since boot), so a PID reused by another
process never makes a live cman's work look abandoned:

- an instance that ``run`` created (label ``cman.run`` = ``PID:STARTTIME``, see
  :data:`cman.models.RUN_LABEL`) and that never started, because cman was killed in
  between, or a ``--rm`` one that runs without the job it was booted for (see
  :func:`abandoned_instances`); once its process is gone nothing will start or remove it;
- a temporary image tarball of :mod:`.imagebuild` (``cman-lxd-image-PID-STARTTIME-*``)
  whose process is gone.

The process check is :func:`cman._sys.proc.process_alive`, the same for every engine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._sys.proc import parse_mark, process_alive, start_time

TARBALL_PREFIX = "cman-lxd-image-"
_TARBALL = re.compile(re.escape(TARBALL_PREFIX) + r"(\d+)-(\d+)-[^/]*\.tar\.gz")


def own_tag() -> str:
    """``PID-STARTTIME`` of this process, for the names of its temporary files."""
    pid = os.getpid()
    return f"{pid}-{start_time(pid) or 0}"


@dataclass(frozen=True)
class Leftover:
    kind: str
    """``container`` or ``file``."""
    name: str
    why: str
    running: bool = False
    """A container that runs (removing it needs force)."""

    def line(self) -> str:
        return f"{self.kind} {self.name}: {self.why}"


def abandoned_instances(instances: Iterable[Mapping[str, Any]], run_key: str, managed_key: str,
                        has_job: Callable[[Mapping[str, Any]], bool | None]) -> list[Leftover]:
    """Instances (GET /1.0/instances?recursion=2) that a ``run`` made and whose cman process
    is gone (label ``run_key``), in one of two states nothing will ever leave:

    - never started (no ``volatile.last_state.power``): cman was killed between create and start;
    - ephemeral (``--rm``), running, meant to run a job (a command, or ``-i``), and no job
      process in it (``has_job`` is False): cman was killed between boot and the job's start,
      so nothing will ever stop it, and LXD removes an ephemeral instance only when it stops.
      A job that runs ends the container itself; ``has_job`` None (unknown) keeps it.
    """
    out = []
    for raw in instances:
        config = raw.get("config") or {}
        if config.get(managed_key) != "true":
            continue
        owner = parse_mark(str(config.get(run_key) or ""))
        if owner is None or process_alive(*owner):
            continue
        status = str(raw.get("status", "")).lower()
        running = status == "running"
        if status == "stopped" and "volatile.last_state.power" not in config:
            why = "created by a run that was killed before it started"
        elif running and raw.get("ephemeral") and wants_job(config) and has_job(raw) is False:
            why = "a --rm run that was killed before its command started"
        else:
            continue
        out.append(Leftover("container", str(raw["name"]), f"{why} (cman process {owner[0]} is gone)", running))
    return out


def wants_job(config: Mapping[str, Any]) -> bool:
    """Did ``run`` give this container a job (a command, or a shell for ``-i``)?"""
    command = str(config.get("user.cman.command") or "")
    return command not in ("", "[]") or config.get("user.cman.interactive") == "true"


def runs_job(init_pid: int) -> bool | None:
    """Is cman's job wrapper (argv ``... cman-job ...``) a process of the container whose init is
    ``init_pid`` (same PID namespace), read from this host's ``/proc``? None when unknown."""
    from ...jobs import JOB_ARGV0

    try:
        namespace = os.readlink(f"/proc/{init_pid}/ns/pid")
        entries = os.listdir("/proc")
    except OSError:
        return None
    needle = b"\0" + JOB_ARGV0.encode() + b"\0"
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            return True
    return False


def abandoned_tarballs(folder: Path) -> list[Leftover]:
    """Temporary image tarballs in ``folder`` whose ``image import`` process is gone."""
    out = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    for name in names:
        m = _TARBALL.fullmatch(name)
        if m is None or process_alive(int(m.group(1)), int(m.group(2))):
            continue
        out.append(Leftover("file", str(folder / name),
                            f"temporary image of an import that was killed (cman process {m.group(1)} is gone)"))
    return out
