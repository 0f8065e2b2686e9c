"""Commands in a docker host, through the backend's exec: probes, file reads and writes.

Every argv here is a constant (or a path cman chose); data goes on stdin, never into a
script, so nothing a user typed becomes shell text. The probes print what
:mod:`.faults` judges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .._sys.retry import idempotent
from ..backends.base import Backend
from ..errors import EngineExecFailed
from ..models import ExecResult

WRITE = 'set -e; mkdir -p "$(dirname "$1")"; cat > "$1.cman-tmp"; chmod "$2" "$1.cman-tmp"; mv -f "$1.cman-tmp" "$1"'
"""Write stdin to ``$1`` atomically with mode ``$2`` (a rename in the guest's filesystem)."""

NESTING_PROBE = ("unshare", "--mount", "--pid", "--fork", "--mount-proc", "true")
"""What runc does first for a nested container: a new mount and PID namespace with its own /proc.
Without nesting, the container's /proc has overmounts that the kernel will not let it mount again."""

KEYCTL_PROBE = ("perl", "-e", "use POSIX; my %nr = (x86_64 => 250, aarch64 => 219); "
                "my $nr = $nr{(POSIX::uname())[4]}; exit 3 unless $nr; "
                "if (syscall($nr, 1, 0) < 0) { print \"$!\\n\"; exit 1 } exit 0")
"""keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL), which runc calls for every container (perl-base is
in every Debian rootfs). Exit 3: an architecture this probe does not know."""

DOCKER_PROBE = ("sh", "-c", "command -v dockerd >/dev/null && command -v docker >/dev/null || exit 1")
"""Exit 0 when both Docker programs are on the PATH, 1 when either is missing."""

CGROUPS_MOUNT = ("sh", "-c", "if command -v cgroupfs-mount >/dev/null; then exec cgroupfs-mount; fi; "
                 "mountpoint -q /sys/fs/cgroup || mount -t tmpfs -o uid=0,gid=0,mode=0755 cgroup /sys/fs/cgroup; "
                 "for c in $(awk '!/^#/ && $4 == 1 {print $1}' /proc/cgroups); do "
                 "mkdir -p /sys/fs/cgroup/$c; mountpoint -q /sys/fs/cgroup/$c || "
                 "mount -n -t cgroup -o $c cgroup /sys/fs/cgroup/$c || rmdir /sys/fs/cgroup/$c; done")
"""The v1 hierarchies mounted inside, as Debian's cgroupfs-mount does (used when it is there)."""


def engine_failed(err: BaseException) -> bool:
    """The engine failed to run a command (LXD's exec can, under load): for a command that
    changes nothing (a read, a probe), asking again is safe."""
    return isinstance(err, EngineExecFailed)


@dataclass
class Guest:
    """One running container of ``backend``, by name."""

    backend: Backend
    name: str

    def run(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: int | None = None) -> ExecResult:
        """``argv`` in the container; ``timeout`` seconds through coreutils' ``timeout`` inside."""
        if timeout is not None:
            argv = ["timeout", "-k", "5", str(timeout), *argv]
        return self.backend.exec_capture(self.name, list(argv), stdin=stdin)

    @idempotent(engine_failed)
    def ok(self, argv: Sequence[str], *, timeout: int | None = 60) -> bool:
        """Does the probe ``argv`` succeed? (Probes change nothing in the guest.)"""
        return self.run(argv, timeout=timeout).exit_code == 0

    @idempotent(engine_failed)
    def text(self, argv: Sequence[str], *, timeout: int | None = 60) -> str:
        """stdout and stderr together, decoded (for judging, never for parsing data)."""
        done = self.run(argv, timeout=timeout)
        return (done.stdout + done.stderr).decode("utf-8", "replace")

    @idempotent(engine_failed)
    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None when it is not there."""
        done = self.run(["cat", "--", path])
        return done.stdout if done.exit_code == 0 else None

    def write(self, path: str, data: bytes, mode: str = "644") -> ExecResult:
        return self.run(["sh", "-c", WRITE, "sh", path, mode], stdin=data)
