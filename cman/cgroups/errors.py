"""The cgroups package's own errors, so callers never see a bare OSError.

Expected conditions (a container that stopped, a file this kernel lacks, a
permission problem) each get a class that says what happened and where, so a
CLI can print one line and a sampler can turn them into a status. They join
cman's one error family (CmanError) so the CLI's single handler knows their
exit codes.
"""

from __future__ import annotations

from pathlib import Path

from cman.errors import CmanError, ExitCode


class CgroupError(CmanError):
    """Base of every error raised by cman.cgroups (e.g. no cgroup fs mounted)."""

    exit_code = ExitCode.UNAVAILABLE


class ProcessGone(CgroupError):
    """The process vanished (its /proc entry is gone): the container stopped."""

    exit_code = ExitCode.NOT_FOUND

    def __init__(self, pid: int) -> None:
        super().__init__(f"process {pid} is gone (no /proc entry); the container may have stopped")
        self.pid = pid


class CgroupUnreadable(CgroupError):
    """A cgroup or /proc file is missing, unreadable or not in the expected format.

    Keeps the path and a short reason so the message says what to check.
    """

    def __init__(self, path: Path, reason: str, errno: int | None = None) -> None:
        super().__init__(f"cannot read {path}: {reason}")
        self.path = path
        self.reason = reason
        self.errno = errno


class CgroupWarning(RuntimeWarning):
    """A counter degraded to a fallback or to None; emitted once per kind."""
