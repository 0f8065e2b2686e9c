"""Files that other processes read while we write them, and locks between cman processes.

- :func:`atomic_write`: a reader sees the old content or the new, never half of it
  (temporary file in the same folder, fsync, rename, fsync of the folder). The temporary
  file is ``.NAME.cman-PID.tmp`` (:func:`temp_name`): one that a killed process left is
  told by its PID (:func:`temp_owner`) and removed by ``cman system prune``.
- :func:`read_json` / :func:`write_json` / :func:`update_json`: small JSON records.
- :func:`locked`: an exclusive ``flock``. flock locks belong to the open file, so a
  killed process never leaves a stale lock behind; waiting polls, so the wait has a
  timeout and ends in :class:`~cman.errors.EngineTimeout`.
- :func:`open_beneath`: open a path inside a root folder (a container's rootfs)
  without following a symlink anywhere on the way: an image can point
  ``/etc/resolv.conf`` at the host's own file, and the host must not write there.
- :class:`TailReader`: incremental reads of a growing file (logs).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import EngineTimeout

LOCK_TIMEOUT = 300.0
"""Seconds to wait for another cman process to release a lock."""
_TEMP = re.compile(r"\.(.+)\.cman-([1-9][0-9]{0,9})\.tmp")


def temp_name(name: str, pid: int | None = None) -> str:
    """The temporary name under which ``name`` is written before its rename: ``.NAME.cman-PID.tmp``."""
    return f".{name}.cman-{os.getpid() if pid is None else pid}.tmp"


def temp_owner(name: str) -> int | None:
    """The PID in a :func:`temp_name`, or None when ``name`` is not one."""
    m = _TEMP.fullmatch(name)
    return int(m.group(2)) if m else None


def atomic_write(path: Path, data: bytes | str, *, mode: int | None = None, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically.

    ``mode`` defaults to the existing file's mode, else 0644. With ``fsync`` the data
    and the rename reach the disk before this returns (config files, records).
    """
    path = Path(path)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(temp_name(path.name))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        with contextlib.suppress(OSError):
            dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any], *, mode: int | None = None) -> None:
    """Write a JSON object atomically."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=mode)


def update_json(path: Path, lock: Path, **changes: Any) -> dict[str, Any]:
    """Read-modify-write ``path`` under ``lock``; returns the new content."""
    with locked(lock, timeout=30):
        data = read_json(path) or {}
        data.update(changes)
        write_json(path, data)
        return data


@contextlib.contextmanager
def locked(path: Path, *, timeout: float = LOCK_TIMEOUT, poll: float = 0.02, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created when missing) for the ``with`` block;
    with ``shared``, a shared one (many holders, none exclusive). ``timeout=0``: one try."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EngineTimeout(
                        f"another cman process has held {path} for more than {timeout:g} s",
                        hint=f"wait for it to finish, or find it with `fuser {path}`",
                    ) from None
                time.sleep(poll)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# -- paths beneath a root -------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError):
    """A component of the path beneath the root is a symlink or not a directory."""


def _parts(relpath: str) -> list[str]:
    parts = [p for p in relpath.strip("/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"not a plain relative path: {relpath!r}")
    return parts


@contextlib.contextmanager
def _walk(root: Path, parts: list[str], *, create: bool, dir_mode: int,
          owner: tuple[int, int] | None) -> Iterator[int]:
    """A dirfd of ``root/parts...``, every step opened with O_NOFOLLOW."""
    fds = [os.open(root, _DIR_FLAGS)]
    try:
        for part in parts:
            try:
                fd = os.open(part, _DIR_FLAGS, dir_fd=fds[-1])
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_mode, dir_fd=fds[-1])
                    if owner is not None:
                        os.chown(part, *owner, dir_fd=fds[-1], follow_symlinks=False)
                fd = os.open(part, _DIR_FLAGS, dir_fd=fds[-1])
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(err.errno, f"{part} is a symlink or not a directory", part) from err
                raise
            fds.append(fd)
        yield fds[-1]
    finally:
        for fd in fds:
            os.close(fd)


def open_beneath(root: Path, relpath: str) -> int | None:
    """A read-only descriptor of the *regular* file ``root/relpath``, reached without following
    any symlink; None when it is missing or not a regular file. O_NONBLOCK: a FIFO or device
    that a container planted must not block cman."""
    *dirs, leaf = _parts(relpath)
    try:
        with _walk(root, dirs, create=False, dir_mode=0o755, owner=None) as dirfd:
            return open_regular_at(dirfd, leaf, relpath)
    except FileNotFoundError:
        return None
    except OSError as err:
        if (unsafe := _unsafe(err, relpath)) is not None:
            raise unsafe from err
        raise


def _unsafe(err: OSError, relpath: str) -> UnsafePath | None:
    """A symlink met on the way (ELOOP, ENOTDIR under O_NOFOLLOW) as UnsafePath; None for other errors."""
    if err.errno in (errno.ELOOP, errno.ENOTDIR):
        return UnsafePath(err.errno, f"{relpath} is a symlink or beneath one", relpath)
    return None


def open_regular_at(dirfd: int, leaf: str, relpath: str) -> int | None:
    """A read-only descriptor of the regular file ``leaf`` in the directory ``dirfd``, never
    through a symlink (:class:`UnsafePath`); None when it is missing or not a regular file.
    ``relpath`` names it in errors."""
    try:
        fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dirfd)
    except FileNotFoundError:
        return None
    except OSError as err:
        if (unsafe := _unsafe(err, relpath)) is not None:
            raise unsafe from err
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def read_beneath(root: Path, relpath: str) -> bytes | None:
    """The content of the regular file ``root/relpath`` (see :func:`open_beneath`); None when it
    does not exist or is not a regular file."""
    fd = open_beneath(root, relpath)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def stat_beneath(root: Path, relpath: str) -> os.stat_result | None:
    """``lstat`` of ``root/relpath`` reached without following symlinks; None when missing."""
    *dirs, leaf = _parts(relpath)
    try:
        with _walk(root, dirs, create=False, dir_mode=0o755, owner=None) as dirfd:
            return os.stat(leaf, dir_fd=dirfd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_beneath(root: Path, relpath: str, data: bytes, *, mode: int = 0o644, append: bool = False,
                  owner: tuple[int, int] | None = None) -> None:
    """Write ``root/relpath`` (folders made as needed) without following symlinks.

    A symlink at the leaf is replaced by a regular file (never written through);
    a symlinked folder on the way is refused with :class:`UnsafePath`. Without
    ``append`` the write is atomic. ``owner`` is the (uid, gid) of what is created.
    """
    *dirs, leaf = _parts(relpath)
    with _walk(root, dirs, create=True, dir_mode=0o755, owner=owner) as dirfd:
        if append:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(leaf, flags, mode, dir_fd=dirfd)
            except OSError as err:
                if err.errno != errno.ELOOP:
                    raise
                os.unlink(leaf, dir_fd=dirfd)
                fd = os.open(leaf, flags, mode, dir_fd=dirfd)
            with os.fdopen(fd, "ab") as fh:
                if owner is not None:
                    os.fchown(fh.fileno(), *owner)
                fh.write(data)
            return
        tmp = temp_name(leaf)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dirfd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                os.fchmod(fh.fileno(), mode)
                if owner is not None:
                    os.fchown(fh.fileno(), *owner)
            os.replace(tmp, leaf, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dirfd)
            raise


class TailReader:
    """Incremental reader of a growing file; a truncated file is read again from the start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:
                    self.offset = 0
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return b""
        self.offset += len(data)
        return data
