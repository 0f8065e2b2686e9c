"""What a killed cman leaves on LXD, found without guessing: pure parts of ``prune_leftovers``.

Two kinds, each tied to the cman process that made it, by PID and that process's start
time (``/proc/PID/stat`` field 22, clock ticks since boot), so a PID reused by another
process never makes a live cman's work look abandoned:

- an instance that ``run`` created (label ``cman.run`` = ``PID:STARTTIME``, see
  :data:`cman.models.RUN_LABEL`) and that never started, because cman was killed in
  between, or one that runs without the job it was booted for (see
  :func:`abandoned_instances`); once its process is gone nothing will start or remove it;
- a temporary image tarball of :mod:`.imagebuild` (``cman-lxd-image-PID-STARTTIME-*``)
  whose process is gone;
- an image that ``image import`` uploaded and never named (killed before the alias): found
  only while no import is in progress (an import keeps its tarball until the alias is made).

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
    - running, meant to run a job (a command, or ``-i``), and no job process in it
      (``has_job`` is False): cman was killed between boot and the job's start, so the
      container runs init alone for good (and an ephemeral one, which LXD removes only when it
      stops, is never removed). A job that began halts the container when it ends, so a
      running container without one never had it: the same rule as raw LXC's. ``has_job``
      None (unknown) keeps it.
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
        elif running and wants_job(config) and has_job(raw) is False:
            why = "booted by a run that was killed before the container's job began"
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


def _tarballs(folder: Path) -> list[tuple[str, bool]]:
    """(name, its process is alive) of each temporary image tarball in ``folder``."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [(name, process_alive(int(m.group(1)), int(m.group(2))))
            for name in names if (m := _TARBALL.fullmatch(name)) is not None]


def abandoned_tarballs(folder: Path) -> list[Leftover]:
    """Temporary image tarballs in ``folder`` whose ``image import`` process is gone."""
    return [Leftover("file", str(folder / name),
                     f"temporary image of an import that was killed (cman process {name.split('-')[3]} is gone)")
            for name, alive in _tarballs(folder) if not alive]


def import_in_progress(folder: Path) -> bool:
    """Does a live ``image import`` hold a temporary tarball in ``folder``? It keeps its tarball
    until the image has its alias, so while one does, an unnamed image may be its own."""
    return any(alive for _name, alive in _tarballs(folder))


def unnamed_imports(images: Iterable[Mapping[str, Any]], instances: Iterable[Mapping[str, Any]],
                    source_key: str) -> list[Leftover]:
    """Images (GET /1.0/images?recursion=1) that ``image import`` built (property
    ``source_key``) and that have no alias, and that no instance was made from: an import
    killed between the upload and the alias. cman names its images only by alias, so nothing
    can use one; the caller asks only when no import is in progress."""
    used = {(raw.get("config") or {}).get("volatile.base_image") for raw in instances}
    return [Leftover("image", str(raw["fingerprint"]),
                     f"imported as {(raw.get('properties') or {}).get('name', '?')} by an image import that was"
                     " killed before it named it")
            for raw in images
            if source_key in (raw.get("properties") or {}) and not raw.get("aliases")
            and raw.get("fingerprint") not in used]
