"""What a killed cman can leave behind on raw LXC, found and removed (``cman system prune``).

Every kind below is told apart from what a user made, or what a live cman is still
making, by a mark (``PID:STARTTIME``, :func:`cman._sys.proc.mark`) or a record:

- **half-made containers**: a container folder without a config (create writes the
  config last) whose ``.cman-creating`` mark names a dead process, and the
  ``.cman-new-PID-STARTTIME-*`` folders a create had not yet renamed;
- **containers of a killed run**: managed, labelled ``cman.run`` (the ``run`` that made
  them, :data:`cman.models.RUN_LABEL`) by a dead process, and never started, or booted
  with their job never begun (nothing but init in them, no ``lxc-attach`` on its way; or,
  running or not, still marked ``job_pending``: killed between the boot and the launch);
- **stale leases**: addresses a network record holds for a container that is gone
  (destroyed outside cman, an ephemeral one LXC destroyed, or a create killed mid-way);
- **temporary folders and files**: the image store's work folders and ``.cman-PID.tmp``
  files of atomic writes, of dead processes;
- **bridges**: an interface whose alias says cman made it for a network of this LXC
  path (:func:`.net.bridge_mark`) when no record of this LXC path names it any more
  (a ``network create`` killed before its record was written), with its host rules.

Network state is looked at under the host-wide network lock, which ``network create``
and every address allocation hold from start to end: what is unrecorded then is a
leftover, not work in progress.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from shutil import which

from ..._sys import files as _files
from ..._sys import proc as _proc
from ...errors import CmanError
from ...models import RUN_LABEL
from . import net
from .containers import LxcContainers
from .images import LxcImages
from .tools import NEW_DIR_PREFIX, RUNNING, Paths, is_ephemeral


def _pid_alive(pid: int) -> bool:
    """For files marked with a PID only: a reused PID keeps one (never the reverse)."""
    return _proc.start_time(pid) is not None


class LxcLeftovers(LxcContainers, LxcImages):
    def prune_leftovers(self, *, dry_run: bool = False) -> list[str]:
        from ...network import host_lock

        found: list[str] = []
        with host_lock():
            found += self._half_made(dry_run)
            found += self._killed_runs(dry_run)
            found += self._stale_leases(dry_run)
            found += self._stray_bridges(dry_run)
        found += self._temporaries(dry_run)
        return found

    # -- containers ------------------------------------------------------------------------

    def _half_made(self, dry_run: bool) -> list[str]:
        out: list[str] = []
        with _files.locked(self._lock_path):
            try:
                entries = sorted(os.listdir(self.lxcpath))
            except FileNotFoundError:
                return out
            for entry in entries:
                folder = Path(self.lxcpath) / entry
                if entry.startswith(NEW_DIR_PREFIX):
                    parts = entry[len(NEW_DIR_PREFIX):].split("-")
                    mark = f"{parts[0]}:{parts[1]}" if len(parts) == 3 else ""
                    why = "left by a create that was killed"
                elif not entry.startswith(".") and folder.is_dir() and not (folder / "config").exists():
                    try:
                        mark = (folder / self._paths(entry).creating.name).read_text()
                    except OSError:
                        continue  # no mark: not cman's to judge (another tool may be making it)
                    why = "half-made by a create that was killed before its config was written"
                else:
                    continue
                if _proc.mark_alive(mark) is not False:
                    continue
                out.append(f"container {entry}: {why} (process {mark.strip()})")
                if not dry_run:
                    shutil.rmtree(folder, ignore_errors=True)
        return out

    def _killed_runs(self, dry_run: bool) -> list[str]:
        """Containers whose ``run`` was killed before it was done starting them: never started,
        or booted without their job ever beginning (killed between the boot and the job's
        ``lxc-attach``: init would run on for good). A container whose job began is the
        user's, as after a killed ``docker run``."""
        out: list[str] = []
        for name in self._container_dirs():
            paths = self._paths(name)
            meta = self._meta(paths)
            mark = str((meta.get("labels") or {}).get(RUN_LABEL) or "")
            if not meta.get("managed") or not mark or _proc.mark_alive(mark) is not False:
                continue
            state = _files.read_json(paths.state) or {}
            if not state.get("started"):
                why = "created by a run that was killed before it started"
            elif meta.get("command") and (state.get("job_pending") or self._jobless(paths)):
                why = "booted by a run that was killed before the container's job began"
            elif is_ephemeral(paths.config) and self._stopped(paths):
                # --rm: once stopped it is LXC's to destroy; one still here was never booted
                # (killed after its start was recorded) or outlived a failed destroy.
                why = "a --rm container of a killed run that stopped without being destroyed"
            else:
                continue
            out.append(f"container {name}: {why}")
            if not dry_run:
                with contextlib.suppress(CmanError):
                    self.remove(name, force=True)
        return out

    def _stopped(self, paths: Paths) -> bool:
        try:
            return self._info(paths)[0] == "STOPPED"
        except CmanError:
            return False

    def _jobless(self, paths: Paths) -> bool:
        """Does the container run nothing but its init, with no lxc-attach on its way in?"""
        try:
            st, init = self._info(paths)
        except CmanError:
            return False
        if st not in RUNNING or init is None:
            return False
        try:
            pidns = os.readlink(f"/proc/{init}/ns/pid")
        except OSError:
            return False
        attach = (b"-P\0" + self.lxcpath.encode() + b"\0", b"-n\0" + paths.name.encode() + b"\0")
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == init:
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == pidns:
                    return False  # the job (or an exec) runs in the container
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"lxc-attach\0" in cmdline and all(part in cmdline for part in attach):
                return False  # about to enter it
        return True

    # -- networks --------------------------------------------------------------------------

    def _stale_leases(self, dry_run: bool) -> list[str]:
        out: list[str] = []
        for record in self.net_records.all():
            name = str(record["name"])
            before = dict(record.get("allocations") or {})
            live = net.live_allocations(record, self._on_network(name))
            stale = {c: ip for c, ip in before.items() if c not in live}
            out += [f"lease {name}/{c} {ip}: its container is gone" for c, ip in sorted(stale.items())]
            if stale and not dry_run:
                record["allocations"] = live
                self.net_records.save(record)
        return out

    def _stray_bridges(self, dry_run: bool) -> list[str]:
        from ...network import netfilter

        if which("ip") is None:
            return []
        try:
            links = json.loads(netfilter.run_tool(["ip", "-j", "link", "show", "type", "bridge"]).stdout or "[]")
        except (CmanError, ValueError):
            return []
        recorded = {(str(r["name"]), str(r.get("bridge") or "")) for r in self.net_records.all()}
        out: list[str] = []
        for link in links:
            bridge, network = str(link.get("ifname") or ""), net.parse_bridge_mark(str(link.get("ifalias") or ""),
                                                                                   self.lxcpath)
            if not bridge or network is None or (network, bridge) in recorded:
                continue
            out.append(f"bridge {bridge}: made by cman for LXC network {network}, which no longer exists")
            if not dry_run:
                with contextlib.suppress(CmanError):
                    netfilter.remove_rules(network, bridge)
                with contextlib.suppress(CmanError):
                    netfilter.delete_link(bridge)
        return out

    # -- temporaries -----------------------------------------------------------------------

    def _temporaries(self, dry_run: bool) -> list[str]:
        out: list[str] = []
        with self.store.lock():
            for work in self.store.stale_workdirs():
                out.append(f"temporary {work}: left by a killed image import, pull or first run")
                if not dry_run:
                    shutil.rmtree(work, ignore_errors=True)
            for folder in self.store.orphans():
                out.append(f"image folder {folder}: of a removed image, no container stands on it any more")
                if not dry_run:
                    shutil.rmtree(folder, ignore_errors=True)
        folders = [Path(self.lxcpath), Path(self.lxcpath) / net.RECORDS_DIR, self.store.root]
        with contextlib.suppress(OSError):
            folders += [d for d in Path(self.lxcpath).iterdir() if d.is_dir() and not d.name.startswith(".")]
        with contextlib.suppress(OSError):
            folders += [d for d in self.store.root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        for folder in folders:
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in sorted(names):
                pid = _files.temp_owner(name)
                if pid is None or _pid_alive(pid):
                    continue
                out.append(f"temporary {folder / name}: a half-written file of a killed process")
                if not dry_run:
                    (folder / name).unlink(missing_ok=True)
        return out
