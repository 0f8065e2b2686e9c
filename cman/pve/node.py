"""Commands on a PVE node over SSH (``--node-ssh root@HOST``): ``pct set`` and ``pct exec``.

sshd hands its command to the remote user's login shell as one string, so the remote argv
is joined with ``shlex.join`` (every element quoted); the local side is an argv list run by
:func:`cman._sys.proc.run`, never a shell. ``BatchMode`` makes a missing key an error,
not a password prompt.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from .._sys import proc
from ..errors import EngineError, InvalidValue
from .plan import Step

_DEST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*@[A-Za-z0-9][A-Za-z0-9.\-]*|"
                   r"[A-Za-z0-9_][A-Za-z0-9_.\-]*@\[[0-9A-Fa-f:.]+\]", re.ASCII)
STEP_TIMEOUT = 900.0
"""apt-get install docker.io on a slow mirror takes minutes."""

KNOWN_CAUSES: tuple[tuple[str, str], ...] = (
    ("ip_unprivileged_port_start", "runc 1.3.3 (CVE-2025-52881) under the container's AppArmor profile: set an "
                                   "unconfined AppArmor profile for this CT or use a runc/containerd build that handles it"),
    ("keyctl", "the container lacks keyctl: pct set ID --features nesting=1,keyctl=1, then restart it"),
    ("apparmor", "an AppArmor denial: see `journalctl -k | grep DENIED` on the node"),
    ("cgroup", "cgroups are not mounted as Docker needs (PVE 7+ is cgroup v2 only): check nesting=1"),
)
"""stderr words -> the fix to show; the first that matches wins."""


def check_dest(dest: str) -> str:
    if not _DEST.fullmatch(dest):
        raise InvalidValue("--node-ssh", dest, "use USER@HOST such as root@pve1")
    return dest


def ssh_argv(dest: str, remote: tuple[str, ...]) -> list[str]:
    return ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "--", dest, shlex.join(remote)]


@dataclass(frozen=True)
class StepOutput:
    name: str
    stdout: str


def run(dest: str, step: Step, *, notify: Callable[[str], None], timeout: float = STEP_TIMEOUT) -> StepOutput:
    """Run one step on the node; a failure names the step, the cause and the fix."""
    result = proc.run(ssh_argv(dest, step.argv), timeout=timeout, check=False, backend="pve",
                      fix="install the OpenSSH client: apt-get install openssh-client")
    if result.returncode == 255:
        raise EngineError(f"pve: step {step.name}: ssh to {dest} failed: {_last(result.stderr) or 'exit 255'}",
                          hint="check that `ssh -o BatchMode=yes " + dest + " true` works with your key")
    if result.returncode != 0:
        fix = next((f for word, f in KNOWN_CAUSES if word in result.stderr.lower()), None)
        raise EngineError(f"pve: step {step.name} failed (exit {result.returncode}): {_last(result.stderr)}",
                          hint=fix or "run the step by hand on the node to see all of its output")
    if step.expect is not None and step.expect not in result.stdout:
        raise EngineError(f"pve: step {step.name}: the output lacks {step.expect!r}")
    if step.name == "storage driver" and result.stdout.strip() == "vfs":
        notify("warning: Docker in the container uses vfs (overlay is unsupported on this storage): every layer is "
               "a full copy; rerun with --fuse-overlayfs")
    return StepOutput(step.name, result.stdout)


def _last(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1][:300]
