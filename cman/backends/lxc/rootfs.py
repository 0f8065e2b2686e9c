"""A container's root filesystem, and how cman reads and writes it from the host.

**Overlay.** A container gets an overlay rootfs (``lxc.rootfs.path = overlay:LOWER:UPPER``):
LOWER is the image's rootfs in cman's store (unpacked once, shifted once per id map for
unprivileged containers: :meth:`.store.ImageStore.shifted_rootfs`), shared read-only by every
container of the image; UPPER is ``LXCPATH/NAME/rootfs``, the container's own files, beside
overlayfs's ``work/``. LXC mounts it at each start inside the container's mount namespace
(for an unprivileged one as the container's root, in its user namespace), with ``userxattr``:
overlayfs then keeps its marks in ``user.overlay.*`` xattrs, which a user namespace may set
(without it, removing a folder of the image fails with EIO there). Nothing is mounted on
the host, and making a container copies nothing: ``cp -a`` of the shifted rootfs took
0.13-0.18 s here, a third of a whole ``run --rm IMAGE true``.

A plain rootfs (a copy, as every container had before) is kept where an overlay cannot
be used: nesting containers (Docker's overlay2 inside cannot stack on overlayfs), paths that
overlayfs's options cannot hold, an image folder the container's root cannot reach, a kernel
without overlayfs. ``Layers.lower`` is None for those, and every function here is then the
plain one of :mod:`cman._sys.files`.

**From the host** (DNS, the job's files): reads follow overlayfs's rules by hand (the upper
first; a whiteout hides the lower's entry; an opaque folder hides the lower's folder), never
through a symlink. Writes go to the upper only: folders on the way are made there like the
lower's (mode, owner), so the merged view changes by the written file alone. A file that is
already in the upper is rewritten in place: overlayfs leaves changes to the names in a
mounted upper undefined, not changes to a file's content, which a running container sees at
once (it is the same inode). So the job's exit-code file is made before the container starts
(:meth:`.jobhost.LxcJobHost.prepare_job_files`), and every later write to it, while the container runs, is in place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..._sys import files as _files
from ..._sys.files import UnsafePath
from .tools import Paths, config_values

OVERLAY_PREFIX = "overlay:"
OVERLAY_OPTIONS = "userxattr"
WORK_DIR = "work"
"""overlayfs's work folder: LXC takes ``dirname(UPPER)/work``."""
OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque")
"""``userxattr`` mounts (cman's) mark opaque folders with the first; a mount without it, the second."""
UNSAFE_CHARS = frozenset(":,\\\n")
"""What LXC's ``overlay:LOWER:UPPER`` and overlayfs's option string cannot hold in a path."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Layers:
    """Where a container's files are: ``upper`` its own (the whole rootfs when ``lower`` is None)."""

    upper: Path
    lower: Path | None = None


def overlay_usable(*paths: Path) -> bool:
    """Can LXC mount an overlay of these folders? (the kernel has overlayfs; no path holds a
    character that ``overlay:LOWER:UPPER`` or the mount options would split on)."""
    if any(UNSAFE_CHARS & set(str(p)) for p in paths):
        return False
    try:
        return "\toverlay\n" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


def rootfs_value(upper: Path, lower: Path | None) -> str:
    """``lxc.rootfs.path`` of a container."""
    return f"dir:{upper}" if lower is None else f"{OVERLAY_PREFIX}{lower}:{upper}"


def parse_rootfs_value(value: str, default_upper: Path) -> Layers:
    """The layers of an ``lxc.rootfs.path`` value; a plain ``default_upper`` for anything else."""
    if value.startswith(OVERLAY_PREFIX):
        lower, sep, upper = value[len(OVERLAY_PREFIX):].partition(":")
        if sep and lower and upper:
            return Layers(Path(upper), Path(lower))
    return Layers(default_upper)


def layers(paths: Paths) -> Layers:
    """The layers of a container, from its config (a plain rootfs when it has none: a container
    being made, or one that LXC has just destroyed)."""
    values = config_values(paths.config, ("lxc.rootfs.path",))
    return parse_rootfs_value(values[-1][1], paths.rootfs) if values else Layers(paths.rootfs)


def make_upper(upper: Path, lower: Path, owner: tuple[int, int] | None) -> None:
    """The container's upper layer and overlayfs's work folder, made before LXC mounts them (it
    mounts as the container's root, who cannot make them in the container's folder). The
    merged root takes its mode and owner from the upper's root: the lower's are copied."""
    st = os.stat(lower)
    upper.mkdir(mode=0o700)
    os.chmod(upper, stat.S_IMODE(st.st_mode))
    os.chown(upper, st.st_uid, st.st_gid)
    work = upper.parent / WORK_DIR
    work.mkdir(mode=0o700)
    if owner is not None:
        os.chown(work, *owner)


# -- the merged view, read and written from the host -----------------------------------------


def _parts(relpath: str) -> list[str]:
    parts = [p for p in relpath.strip("/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"not a plain relative path: {relpath!r}")
    return parts


def _lstat(name: str, dirfd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_whiteout(st: os.stat_result) -> bool:
    """overlayfs's mark of a removed entry: a character device 0:0 in the upper."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(fd: int) -> bool:
    for name in OPAQUE_XATTRS:
        with contextlib.suppress(OSError):
            if os.getxattr(fd, name) == b"y":
                return True
    return False


def _unsafe(part: str, err: OSError | None = None) -> UnsafePath:
    code = err.errno if err is not None and err.errno else errno.ENOTDIR
    return UnsafePath(code, f"{part} is a symlink or not a directory", part)


@contextlib.contextmanager
def _walk(layers: Layers, parts: list[str], *, create: bool = False, dir_mode: int = 0o755,
          owner: tuple[int, int] | None = None) -> Iterator[tuple[int | None, int | None]]:
    """Dirfds (upper, lower) of the merged folder ``parts``; either may be None where that
    layer has no such folder. ``create`` makes the folders in the upper (like the lower's, or
    ``dir_mode``/``owner`` for new ones). FileNotFoundError when the merged view has none."""
    assert layers.lower is not None
    fds: list[int] = []

    def keep(fd: int) -> int:
        fds.append(fd)
        return fd

    try:
        up: int | None = keep(os.open(layers.upper, _DIR_FLAGS))
        try:
            low: int | None = keep(os.open(layers.lower, _DIR_FLAGS))
        except FileNotFoundError:
            low = None
        for part in parts:
            new_up: int | None = None
            new_low: int | None = None
            hidden = False  # the lower's folder is hidden (a whiteout, or an opaque upper folder)
            st = _lstat(part, up) if up is not None else None
            if st is not None and is_whiteout(st):
                if not create or up is None:
                    raise FileNotFoundError(errno.ENOENT, "removed in the container", part)
                os.unlink(part, dir_fd=up)  # a folder again, an opaque one: the lower's stays hidden
                os.mkdir(part, dir_mode, dir_fd=up)
                new_up = keep(os.open(part, _DIR_FLAGS, dir_fd=up))
                os.fchmod(new_up, dir_mode)
                if owner is not None:
                    os.fchown(new_up, *owner)
                os.setxattr(new_up, OPAQUE_XATTRS[0], b"y")
                hidden = True
            elif st is not None:
                if not stat.S_ISDIR(st.st_mode):
                    raise _unsafe(part)
                try:
                    new_up = keep(os.open(part, _DIR_FLAGS, dir_fd=up))
                except OSError as err:
                    if err.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise _unsafe(part, err) from err
                    raise
                hidden = _is_opaque(new_up)
            if low is not None and not hidden:
                try:
                    new_low = keep(os.open(part, _DIR_FLAGS, dir_fd=low))
                except FileNotFoundError:
                    pass
                except OSError as err:
                    if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    if new_up is None:  # the merged entry is the lower's symlink or file
                        raise _unsafe(part, err) from err
            if new_up is None and create and up is not None:
                like = os.fstat(new_low) if new_low is not None else None
                mode = stat.S_IMODE(like.st_mode) if like is not None else dir_mode
                ids = (like.st_uid, like.st_gid) if like is not None else owner
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=up)
                new_up = keep(os.open(part, _DIR_FLAGS, dir_fd=up))
                os.fchmod(new_up, mode)
                if ids is not None:
                    os.fchown(new_up, *ids)
            if new_up is None and new_low is None:
                raise FileNotFoundError(errno.ENOENT, "no such folder", part)
            up, low = new_up, new_low
        yield up, low
    finally:
        for fd in fds:
            os.close(fd)


def _find(layers: Layers, relpath: str) -> Iterator[tuple[int, str, os.stat_result]]:
    """(dirfd, leaf, lstat) of the merged entry ``relpath``; nothing when it is missing."""
    *dirs, leaf = _parts(relpath)
    try:
        with _walk(layers, dirs) as (up, low):
            for fd in (up, low):
                if fd is None:
                    continue
                st = _lstat(leaf, fd)
                if st is None:
                    continue
                if fd == up and is_whiteout(st):
                    return
                yield fd, leaf, st
                return
    except FileNotFoundError:
        return


def open_file(layers: Layers, relpath: str) -> int | None:
    """A read-only descriptor of the regular file ``relpath`` of the merged view (see
    :func:`cman._sys.files.open_beneath`)."""
    if layers.lower is None:
        return _files.open_beneath(layers.upper, relpath)
    for dirfd, leaf, st in _find(layers, relpath):
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(errno.ELOOP, f"{relpath} is a symlink", relpath)
        return _files.open_regular_at(dirfd, leaf, relpath)
    return None


def read_file(layers: Layers, relpath: str) -> bytes | None:
    """The content of the regular file ``relpath`` of the merged view; None when missing."""
    fd = open_file(layers, relpath)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def stat_file(layers: Layers, relpath: str) -> os.stat_result | None:
    """``lstat`` of ``relpath`` in the merged view; None when missing."""
    if layers.lower is None:
        return _files.stat_beneath(layers.upper, relpath)
    for _dirfd, _leaf, st in _find(layers, relpath):
        return st
    return None


def write_file(layers: Layers, relpath: str, data: bytes, *, mode: int = 0o644,
               owner: tuple[int, int] | None = None) -> None:
    """Write ``relpath`` into the container's upper layer (see the module): in place when the
    upper holds it as a regular file of one link, else atomically (folders made as needed)."""
    if layers.lower is None:
        _files.write_beneath(layers.upper, relpath, data, mode=mode, owner=owner)
        return
    *dirs, leaf = _parts(relpath)
    with _walk(layers, dirs, create=True, owner=owner) as (up, _low):
        assert up is not None
        st = _lstat(leaf, up)
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            try:
                fd = os.open(leaf, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=up)
            except OSError:
                fd = -1
            if fd >= 0:
                with os.fdopen(fd, "wb") as fh:
                    now = os.fstat(fd)
                    if stat.S_ISREG(now.st_mode) and now.st_nlink == 1:  # not swapped meanwhile
                        os.ftruncate(fd, 0)
                        fh.write(data)
                        os.fchmod(fd, mode)
                        if owner is not None:
                            os.fchown(fd, *owner)
                        return
    _files.write_beneath(layers.upper, relpath, data, mode=mode, owner=owner)


def prepare_dirs(layers: Layers, reldir: str, owner: tuple[int, int] | None = None) -> None:
    """Make the folder ``reldir`` in the upper like the merged view's (a no-op for a plain
    rootfs), so that :func:`cman._sys.files.write_beneath` into the upper keeps the lower's
    folders; UnsafePath when the merged view has a symlink or a file on the way."""
    if layers.lower is None:
        return
    with _walk(layers, _parts(reldir), create=True, owner=owner):
        pass
