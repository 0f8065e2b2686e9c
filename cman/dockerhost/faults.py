"""What goes wrong with Docker inside an LXC container, by name, with its fix.

Pure functions over text that the guest printed (``/proc/self/mountinfo``, dockerd's log,
the inner ``docker run``'s error): the probes run in :mod:`.guest`, the judging happens
here, so every fault has a unit test on the very lines an engine prints.

The names are what ``cman doctor docker-host`` prints and what the README lists:
``nesting``, ``cgroup-mounts``, ``keyctl``, ``apparmor``, ``overlay``, ``docker``,
``daemon-json``, ``dockerd``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..models import _Jsonable

OK, WARNING, PROBLEM = "ok", "warning", "problem"


@dataclass(frozen=True)
class Finding(_Jsonable):
    """One check of a docker host: ``ok``, a ``warning`` (works, at a cost) or a ``problem``."""

    name: str
    status: str
    detail: str
    fix: str = ""


FIXES = {
    "nesting": "turn nesting on: cman's docker-host profile (LXD security.nesting=true; LXC nesting.conf; "
               "PVE features: nesting=1)",
    "cgroup-mounts": "mount the cgroup hierarchies inside (`cgroupfs-mount`, which `cman provision docker-host` "
                     "runs), or give the container cman's docker-host profile",
    "keyctl": "allow keyctl: PVE `pct set ID --features nesting=1,keyctl=1` (as root@pam); LXC/LXD: no seccomp "
              "rule that denies keyctl",
    "apparmor": "the 2025 runc fix for CVE-2025-52881 opens /proc/sys files again through procfs, which LXC's "
                "AppArmor profile denies: update LXC (or pve-container) to a profile that allows it, or, explicitly, "
                "run the container unconfined (LXC `lxc.apparmor.profile = unconfined`; PVE "
                "`lxc.apparmor.profile: unconfined`)",
    "overlay": "overlay is not available inside, so Docker stores every layer in full (vfs): expect several times "
               "the disk use; use fuse-overlayfs (PVE features fuse=1, `--fuse-overlayfs`) or a filesystem with "
               "overlay support for the container's root",
    "docker": "install docker.io inside (cman provision docker-host does, from a Debian image that has it)",
    "daemon-json": "fix /etc/docker/daemon.json inside (it must be a JSON object), or rerun cman provision "
                   "docker-host",
    "dockerd": "start dockerd inside (/etc/init.d/docker start), or rerun cman provision docker-host",
}

_CAUSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("apparmor", re.compile(r"ip_unprivileged_port_start|apparmor.*denied|denied.*apparmor|reopen fd \d+: "
                            r"permission denied", re.I)),
    ("keyctl", re.compile(r"keyring|keyctl", re.I)),
    ("cgroup-mounts", re.compile(r"Devices cgroup isn't mounted|no cgroup mount found|cgroup mountpoint does not "
                                 r"exist|cgroups?: cannot find cgroup mount destination", re.I)),
    ("nesting", re.compile(r"mount_too_revealing|mount.*proc.*(operation not permitted|permission denied)|"
                           r"error mounting \"proc\"", re.I)),
    ("overlay", re.compile(r"overlay.*(not supported|invalid argument)|driver not supported", re.I)),
)


def cause_of(text: str) -> str | None:
    """The fault that ``text`` (dockerd's log, an inner ``docker run``'s error) names, if any.
    The first match wins: AppArmor and keyctl messages also mention mounts and proc."""
    for name, pattern in _CAUSES:
        if pattern.search(text):
            return name
    return None


def explain(text: str, *, step: str) -> Finding:
    """A failed step's output as a finding: the cause by name when the text gives it away."""
    cause = cause_of(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = [line for line in lines if re.search(r"error|denied|failed|level=fatal", line, re.I)]
    last = (said or lines or ["no output"])[-1]
    if cause is None:
        return Finding(step, PROBLEM, last[:400])
    return Finding(cause, PROBLEM, f"{step}: {last[:400]}", FIXES[cause])


# -- mountinfo ----------------------------------------------------------------------------------

NEEDED_V1 = ("cpu", "cpuacct", "devices", "memory", "pids", "freezer", "blkio")
"""The v1 controllers Docker needs mounted (it refuses to start without ``devices``)."""


def cgroup_mounts(mountinfo: str) -> tuple[bool, set[str]]:
    """From ``/proc/self/mountinfo``: is a cgroup2 hierarchy at /sys/fs/cgroup, and which v1
    controllers are mounted under it? Only what is visible counts: a later mount on a path
    hides what was mounted on or under it before (mountinfo lists both, in mount order)."""
    visible: dict[str, tuple[str, str]] = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if not sep or len(fields) < 5 or len(rest) < 3:
            continue
        point = fields[4].replace("\\040", " ")
        for seen in [p for p in visible if p == point or p.startswith(point.rstrip("/") + "/")]:
            del visible[seen]
        visible[point] = (rest[0], rest[2])
    v2, v1 = False, set[str]()
    for point, (fstype, options) in visible.items():
        if not point.startswith("/sys/fs/cgroup"):
            continue
        if fstype == "cgroup2" and point == "/sys/fs/cgroup":
            v2 = True
        elif fstype == "cgroup":
            v1.update(o for o in options.split(",") if o in NEEDED_V1)
    return v2, v1


def check_cgroups(mountinfo: str, enabled: set[str]) -> Finding:
    """``enabled``: the v1 controllers the kernel has (``/proc/cgroups``) that Docker needs."""
    v2, v1 = cgroup_mounts(mountinfo)
    if v2:
        return Finding("cgroup-mounts", OK, "cgroup v2 at /sys/fs/cgroup")
    missing = sorted((enabled & set(NEEDED_V1)) - v1)
    if not v1 or missing:
        return Finding("cgroup-mounts", PROBLEM, "not mounted inside: " + ", ".join(missing or sorted(enabled)),
                       FIXES["cgroup-mounts"])
    return Finding("cgroup-mounts", OK, "cgroup v1: " + ", ".join(sorted(v1)))


def enabled_controllers(proc_cgroups: str) -> set[str]:
    """The enabled controllers of ``/proc/cgroups`` (``#subsys_name hierarchy num_cgroups enabled``)."""
    out = set()
    for line in proc_cgroups.splitlines():
        parts = line.split()
        if len(parts) == 4 and not line.startswith("#") and parts[3] == "1":
            out.add(parts[0])
    return out


# -- runc and AppArmor --------------------------------------------------------------------------

RUNC_FIXED = ((1, 2, 8), (1, 3, 3), (1, 4, 0))
"""The runc releases with the CVE-2025-52881 fix (and what came after them in each series)."""


def runc_has_2025_fix(version_text: str) -> bool | None:
    """Does this ``runc --version`` output name a release with the procfs reopen of the
    CVE-2025-52881 fix? None when no version is in it."""
    found = re.search(r"runc version (\d+)\.(\d+)\.(\d+)", version_text)
    if not found:
        return None
    version = tuple(int(p) for p in found.groups())
    return any(version[:2] == fixed[:2] and version >= fixed for fixed in RUNC_FIXED) or version >= (1, 4, 0)


def check_apparmor(host_apparmor: bool, label: str, runc_version: str) -> Finding:
    """``label``: the container's AppArmor label (``/proc/1/attr/current`` inside)."""
    label = label.strip().rstrip("\0").strip()
    if not host_apparmor:
        return Finding("apparmor", OK, "the host has no AppArmor")
    if not label or label == "unconfined":
        return Finding("apparmor", OK, "the container runs unconfined")
    if runc_has_2025_fix(runc_version):
        return Finding("apparmor", PROBLEM, f"confined by {label} with a runc that has the CVE-2025-52881 fix: "
                       "runc's reopen of /proc/sys files is denied", FIXES["apparmor"])
    return Finding("apparmor", OK, f"confined by {label}; this runc predates the CVE-2025-52881 change")


def check_storage(driver: str) -> Finding:
    driver = driver.strip()
    if driver == "vfs":
        return Finding("overlay", WARNING, "Docker uses the vfs storage driver", FIXES["overlay"])
    return Finding("overlay", OK, f"storage driver {driver or 'unknown'}")
