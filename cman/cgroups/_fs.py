"""The one place that reads files, so tests can replace it and errors map in one spot."""

from __future__ import annotations

import errno as errno_mod
import os
from pathlib import Path

from .errors import CgroupUnreadable


def read_text(path: Path) -> str:
    """Read a small kernel file in one go; raises the raw OSError.

    Kept raw and tiny on purpose: tests monkeypatch it to simulate EACCES,
    ESRCH and friends, and the callers decide what each errno means.
    """
    # os.open/os.read: about half the cost of open(); this runs per container per tick.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):  # mounts can exceed one read
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def reason_for(err: OSError) -> str:
    """Say in words why a read failed, naming the usual cause."""
    if isinstance(err, FileNotFoundError):
        return "missing (no such file; cgroup removed or counter not provided by this kernel)"
    if isinstance(err, PermissionError):
        return "permission denied (run as root or grant read access to the cgroup tree)"
    if isinstance(err, IsADirectoryError):
        return "is a directory, expected a file"
    if err.errno is not None:
        return f"{errno_mod.errorcode.get(err.errno, str(err.errno))}: {err.strerror}"
    return str(err)


def read_cgroup_file(path: Path) -> str:
    """Read a cgroup file, translating every OS failure into CgroupUnreadable."""
    try:
        return read_text(path)
    except OSError as err:
        raise CgroupUnreadable(path, reason_for(err), err.errno) from err
