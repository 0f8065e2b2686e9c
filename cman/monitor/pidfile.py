"""The daemon's pidfile, locked with ``fcntl`` for the daemon's whole life.

The lock is a POSIX record lock, so "running" is a fact the kernel keeps, not a guess
from a PID that may have been reused: :func:`lock_holder` asks the kernel who holds it
(``F_GETLK``) without taking the lock itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from pathlib import Path

from .config import MonitorError, MonitorRunning

_FLOCK = "hhqqi4x"  # struct flock on Linux 64-bit: type, whence, start, len, pid (+ padding)


def lock_holder(pidfile: Path) -> int | None:
    """PID of the process holding ``pidfile``'s lock, or None when nobody does.

    Asks the kernel (F_GETLK) without taking the lock, so a reader can never make
    a starting daemon fail. Returns -1 when it is locked but the holder's PID is not
    visible (another PID namespace) and the file does not say either.
    Never call this inside the daemon: closing any descriptor of the file would drop
    the daemon's own POSIX lock.
    """
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as err:
        raise MonitorError(f"cannot read the pidfile {pidfile}: permission denied", hint="run as root") from err
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
        if kind == fcntl.F_UNLCK:
            return None
        if pid > 0:
            return int(pid)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)


class PidFile:
    """The daemon's pidfile, locked for its whole life."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock and write our PID; MonitorRunning when another process holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MonitorError(f"cannot create {self.path.parent}: {err.strerror}", hint="choose another --pidfile") from err
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                raise MonitorError(f"cannot open the pidfile {self.path}: {err.strerror}",
                                   hint="choose another --pidfile") from err
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EACCES, errno.EAGAIN):
                    raise MonitorRunning(lock_holder(self.path), self.path) from err
                raise
            # A stopping monitor unlinks its pidfile before it unlocks: if we locked
            # that old inode, start again with the file that is now at the path.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return
        raise MonitorError(f"could not lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        """Remove the file, then unlock (in that order: see :meth:`acquire`)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
