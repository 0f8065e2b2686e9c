"""What a killed cman leaves behind, found and removed: ``cman system prune``.

Each engine knows its own leftovers (:meth:`Backend.prune_leftovers`: containers of a run
killed before it started, half-made containers, leases, bridges, ...). :func:`prune` asks
every engine that answers, then adds what belongs to no engine:

- **DOCKER-USER rules** tagged ``cman:NETWORK`` (:mod:`cman.network.netfilter`) whose
  network exists on no backend and whose bridge is gone: a ``network rm`` killed between
  the engine's delete and the rule's removal. Judged under the host-wide network lock
  (``network create`` and ``network rm`` hold it from start to end, so nothing half-done
  is seen), and only when every engine that can own networks answered from this host: a
  network of an engine that is down, or of a remote one, is not known to be gone. A rule
  whose bridge still exists is kept (it may serve a network of another LXC path).
- **Temporary files** of :func:`cman._sys.files.atomic_write` (``.NAME.cman-PID.tmp``) in
  cman's own folders (:data:`HOST_FOLDERS`) whose process is gone. A PID that runs keeps
  its files, even when it was reused by another process: the safe side.
- **OCI work folders** (``.tmp-PID-STARTTIME-RANDOM`` in the host's OCI layout folder,
  :mod:`cman.oci.layout`: an image being unpacked for LXD or LXC) whose process is gone: the
  start time tells a reused PID apart.

Nothing a user made, and nothing a live cman works on, is touched. Each item is reported
as WHERE (a backend, or ``host``), WHAT and WHY; with ``dry_run`` nothing is removed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import backends
from ._sys import files as _files
from ._sys.proc import start_time
from .backends.base import Backend, Feature
from .errors import CmanError
from .network import netfilter
from .network.host import host_lock

HOST_FOLDERS = (Path("/var/lib/cman"), Path("/run/cman"))
"""cman's own folders on the host (state; run-time files, locks and the monitor's).
$CMAN_RUN_DIR is added when set. An engine's own folders (the LXC path, its image store)
are that engine's to prune."""
DEPTH = 2
"""How deep below a folder temporary files are looked for. Folders named ``rootfs*`` and
hidden ones are not entered: they hold container trees, not cman's files."""
HOST = "host"


@dataclass(frozen=True)
class Leftover:
    """One thing a killed cman left behind."""

    where: str
    """The backend it was found on, or ``host``."""
    what: str
    """KIND NAME, e.g. ``container web``, ``temporary /run/cman/.x.cman-12.tmp``."""
    why: str
    removed: bool
    """False with ``dry_run`` (or when it vanished before it could be removed)."""

    def __str__(self) -> str:
        return f"{self.where}: {self.what}: {self.why}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PruneReport:
    items: list[Leftover] = field(default_factory=list)
    problems: list[tuple[str, CmanError]] = field(default_factory=list)
    """(where, error): a backend whose prune failed."""
    warnings: list[str] = field(default_factory=list)
    """Kinds of leftovers that could not be judged this time (and why)."""


def from_line(where: str, line: str, removed: bool) -> Leftover:
    """An engine's ``KIND NAME: why`` line (:meth:`Backend.prune_leftovers`) as a Leftover."""
    what, sep, why = line.partition(": ")
    return Leftover(where, what.strip(), why.strip() if sep else "", removed)


def prune(*, dry_run: bool = False, names: Sequence[str] | None = None) -> PruneReport:
    """Remove (or with ``dry_run`` only list) what killed cman processes left behind."""
    report = PruneReport()
    loaded: list[Backend] = []
    unknown: list[str] = []
    try:
        for name in names if names is not None else backends.names():
            backend = _engine(name, report, unknown)
            if backend is None:
                continue
            loaded.append(backend)
            try:
                lines = backend.prune_leftovers(dry_run=dry_run)
            except CmanError as err:
                report.problems.append((name, err))
                continue
            report.items += [from_line(name, line, not dry_run) for line in lines]
        try:
            rules, why_not = orphan_rules(loaded, unknown, dry_run=dry_run)
            report.items += rules
            report.warnings += [why_not] if why_not else []
        except CmanError as err:
            report.problems.append((HOST, err))
    finally:
        for backend in loaded:
            backend.close()
    reported = {item.what for item in report.items}  # an engine may report its own temporaries first
    report.items += [t for t in stale_temporaries(host_folders(), dry_run=dry_run) if t.what not in reported]
    report.items += stale_oci_workdirs(dry_run=dry_run)
    return report


def _engine(name: str, report: PruneReport, unknown: list[str]) -> Backend | None:
    """The backend ``name`` when it answers; else None, noting an installed one as unknown."""
    try:
        status = backends.backend_class(name).probe()
        if not status.reachable:
            if status.installed:
                unknown.append(f"{name} ({status.problem or 'not reachable'})")
            return None
        return backends.load(name)
    except CmanError as err:
        report.problems.append((name, err))
        unknown.append(name)
        return None


# -- DOCKER-USER rules ----------------------------------------------------------------------------


def orphan_rules(loaded: Iterable[Backend], unknown: Sequence[str], *, dry_run: bool) -> tuple[list[Leftover], str | None]:
    """cman's DOCKER-USER rules whose network exists on no backend and whose bridge is gone.

    ``unknown`` names the engines that could not be asked (down, or failed): while any
    engine's networks are unknown, no rule is judged, and the second value says why.
    """
    if shutil.which("iptables") is None:
        return [], None
    out: list[Leftover] = []
    with host_lock():
        rules = netfilter.tagged_rules()
        if not rules:
            return [], None
        owners = [b for b in loaded if Feature.NETWORKS in b.capabilities]
        remote = [f"{b.name} ({b.locality().endpoint})" for b in owners if not b.locality().local]
        if unknown or remote:
            return [], (f"cman's {netfilter.CHAIN} rules were not checked: the networks of"
                        f" {', '.join([*unknown, *remote])} cannot be seen from this host")
        networks = {n.name for b in owners for n in b.networks()}
        for rule in rules:
            bridge = rule.option("-i")
            if rule.network in networks or (bridge and netfilter.link_exists(bridge)):
                continue
            removed = not dry_run and netfilter.delete_rule(rule)
            out.append(Leftover(HOST, f"rule {rule}", f"its network {rule.network} exists on no backend"
                                f" and its bridge {bridge or '?'} is gone", removed))
    return out, None


# -- temporary files ------------------------------------------------------------------------------


def host_folders() -> list[Path]:
    extra = os.environ.get("CMAN_RUN_DIR")
    return [*HOST_FOLDERS, *([Path(extra)] if extra else [])]


def _folders(root: Path, depth: int) -> Iterator[Path]:
    """``root`` and the folders below it, down to ``depth`` levels; no symlink is followed."""
    yield root
    if depth <= 0:
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith((".", "rootfs")) or not entry.is_dir(follow_symlinks=False):
            continue
        yield from _folders(Path(entry.path), depth - 1)


def stale_temporaries(roots: Iterable[Path], *, dry_run: bool, depth: int = DEPTH) -> list[Leftover]:
    """``.NAME.cman-PID.tmp`` files under ``roots`` whose process is gone."""
    out: list[Leftover] = []
    seen: set[Path] = set()
    for root in roots:
        for folder in _folders(root, depth):
            if folder in seen:
                continue
            seen.add(folder)
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            for name in names:
                pid = _files.temp_owner(name)
                path = folder / name
                if pid is None or start_time(pid) is not None or not path.is_file() or path.is_symlink():
                    continue
                why, removed = f"a half-written file of process {pid}, which is gone", False
                if not dry_run:
                    try:
                        path.unlink()
                        removed = True
                    except FileNotFoundError:
                        continue  # someone else removed it meanwhile
                    except OSError as err:
                        why += f" (not removed: {err.strerror or err})"
                out.append(Leftover(HOST, f"temporary {path}", why, removed))
    return out


def stale_oci_workdirs(*, dry_run: bool) -> list[Leftover]:
    """Work folders of the OCI layout whose process is gone (:func:`cman.oci.layout.stale_workdirs`)."""
    from .oci import layout

    out: list[Leftover] = []
    for path in layout.stale_workdirs():
        pid = path.name.split("-")[1]
        removed = False
        if not dry_run:
            layout.remove(path)
            removed = not path.exists()
        out.append(Leftover(HOST, f"folder {path}", f"an OCI unpack folder of process {pid}, which is gone", removed))
    return out
