"""Unprivileged containers: the id map, the shifted rootfs, and what the host must allow.

By default an LXC container of cman runs in a user namespace: its root is an ordinary
host user, ``BASE`` of the id range ``/etc/subuid`` and ``/etc/subgid`` give the user
running cman (root: 100000 on these machines), and ``lxc.idmap = u 0 BASE 65536`` /
``g 0 BASE 65536`` map the container's ids 0-65535 onto that range. Checked here (LXC
5.0.2): with ``userns.conf`` included, such a container starts under ``lxc-start`` as
root; its init has uid_map ``0 100000 65536`` and ``id`` inside says uid=0.

- **The rootfs is shifted**: every file of the image belongs to BASE+uid, BASE+gid on
  the host (:func:`shift_tree`), once per image and id map, kept in cman's image store
  (:mod:`.store`); it is the lower layer of each container's overlay rootfs (:mod:`.rootfs`;
  the image's folder is then ``root:BASE_GID`` mode 0710, so the container's root can reach
  it), or copied where no overlay can be used.
- **What cman writes into a rootfs** (resolv.conf, the job's files) belongs to the
  mapped root, or the container's root could not write it (to it, a file of host root
  is "nobody's").
- **The way to the rootfs**: the container's root must be able to pass through every
  folder above it. The container's own folder is ``root:BASE_GID`` mode 0710 (the
  container's root may pass, not list or write; other users not even pass), and every
  folder above the LXC path needs search permission for it (:func:`check_reachable`).
  LXC's own error for this ("Could not access ... Please grant it x access") comes only
  at start; cman says it at create.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from ...errors import EngineUnavailable

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
MAP_SIZE = 65536
"""Container ids 0-65535: what a Linux distribution uses (nobody is 65534)."""
NOBODY = 65534
APPARMOR = Path("/sys/kernel/security/apparmor")


@dataclass(frozen=True)
class IdMap:
    """Container ids 0..count-1 are host ids uid..uid+count-1 (gid likewise)."""

    uid: int
    gid: int
    count: int = MAP_SIZE

    @property
    def key(self) -> str:
        """The name of a rootfs shifted for this map in the image store."""
        return f"u{self.uid}-g{self.gid}-n{self.count}"

    @property
    def root(self) -> tuple[int, int]:
        """The container's root as host (uid, gid): the owner of what cman writes inside."""
        return self.uid, self.gid

    def entries(self) -> list[tuple[str, str]]:
        return [("lxc.idmap", f"u 0 {self.uid} {self.count}"), ("lxc.idmap", f"g 0 {self.gid} {self.count}")]


def parse_subid(text: str, user: str, uid: int, need: int = MAP_SIZE) -> int | None:
    """The first id of the first range of ``user`` (by name or number) holding ``need`` ids."""
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start > 0 and count >= need:
            return start
    return None


def host_idmap(subuid: Path | None = None, subgid: Path | None = None, uid: int | None = None) -> IdMap:
    """The id map for the user running cman (from /etc/subuid and /etc/subgid unless told);
    EngineUnavailable, with the fix, when there is none."""
    subuid, subgid = subuid or SUBUID, subgid or SUBGID
    uid = os.geteuid() if uid is None else uid
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    found: list[int | None] = []
    for path in (subuid, subgid):
        try:
            text = path.read_text()
        except OSError:
            text = ""
        found.append(parse_subid(text, user, uid))
    base_uid, base_gid = found
    if base_uid is None or base_gid is None:
        missing = " and ".join(str(p) for p, b in ((subuid, base_uid), (subgid, base_gid)) if b is None)
        raise EngineUnavailable(
            "lxc",
            f"no range of {MAP_SIZE} subordinate ids for {user} in {missing}: unprivileged containers need one",
            f"add one (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}), "
            "or run privileged containers with --privileged",
        )
    return IdMap(base_uid, base_gid)


def host_has_apparmor(path: Path | None = None) -> bool:
    """Is AppArmor active on this host? (LXC then confines containers with a profile.)"""
    return (path or APPARMOR).is_dir()


def blocking_folder(path: Path, idmap: IdMap) -> tuple[Path, int] | None:
    """The first folder down to ``path`` (itself included) that the container's root cannot
    pass through, with its mode; None when it can pass them all (or they are made later)."""
    for folder in reversed([path, *path.parents]):
        try:
            st = folder.stat()
        except FileNotFoundError:
            return None  # made later by cman, with the default mode
        except OSError:
            continue
        mode = st.st_mode
        if (mode & stat.S_IXOTH or (st.st_uid == idmap.uid and mode & stat.S_IXUSR)
                or (st.st_gid == idmap.gid and mode & stat.S_IXGRP)):
            continue
        return folder, stat.S_IMODE(mode)
    return None


def check_reachable(lxcpath: str, idmap: IdMap) -> None:
    """Can the container's root pass through every folder down to the LXC path?"""
    blocked = blocking_folder(Path(lxcpath), idmap)
    if blocked is None:
        return
    folder, mode = blocked
    raise EngineUnavailable(
        "lxc",
        f"the containers' root (host uid {idmap.uid}) cannot pass through {folder} "
        f"(mode {mode:04o}) to reach the LXC path {lxcpath}",
        f"chmod o+x {folder}, choose another LXC path, or run privileged containers with --privileged",
    )


def prepare_container_dir(path: Path, idmap: IdMap | None) -> None:
    """The container's folder: root's, the container's root may only pass (see the module)."""
    if idmap is None:
        path.mkdir(mode=0o770)
        return
    path.mkdir(mode=0o700)
    os.chown(path, 0, idmap.gid)
    os.chmod(path, 0o710)


def _shifted(value: int, base: int, count: int) -> int:
    """An id of the image as a host id; one outside the map becomes the container's nobody."""
    return base + (value if 0 <= value < count else NOBODY)


def shift_tree(root: Path, idmap: IdMap) -> int:
    """Give every file beneath ``root`` (and ``root``) to the mapped ids; returns the count.

    Hard links are shifted once (by inode). chown clears set-user-ID and set-group-ID
    bits, so they are put back. Symlinks are changed themselves, never followed.
    """
    seen: set[tuple[int, int]] = set()
    count = 0

    def shift(path: str, st: os.stat_result) -> None:
        nonlocal count
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
        os.lchown(path, _shifted(st.st_uid, idmap.uid, idmap.count), _shifted(st.st_gid, idmap.gid, idmap.count))
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(st.st_mode))
        count += 1

    shift(str(root), os.lstat(root))
    folders = [str(root)]
    while folders:  # a stack, not recursion: a rootfs may nest deeper than Python's limit
        with os.scandir(folders.pop()) as entries:
            items = [(e.path, e.stat(follow_symlinks=False)) for e in entries]
        for path, st in items:
            shift(path, st)
            if stat.S_ISDIR(st.st_mode):
                folders.append(path)
    return count
