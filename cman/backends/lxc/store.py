"""cman's own image store for raw LXC (LXC itself has none).

Layout, under ``$CMAN_LXC_IMAGES`` (default /var/lib/cman/lxc-images)::

    .lock                       flock held around every change of the store
    <id>/rootfs.tar[.gz|.xz|.bz2]   the rootfs tarball, byte for byte as imported
    <id>/metadata.json          id, sha256 (of the tarball), size, created, source, aliases, ...
    <id>/rootfs.u<UID>-g<GID>-n<COUNT>/   the rootfs unpacked and shifted for one id map
                                (:mod:`.idmap`): made once, the lower layer of each unprivileged
                                container's overlay (:mod:`.rootfs`), or copied where none can be used
    <id>/rootfs.plain/          the rootfs unpacked as it is: privileged containers' lower layer
    <id>/removed                an image removed while containers still stand on its layers
    <id>/users/<hash>           one per container over a lower layer of the image: its folder and
                                the layer, so the layer outlives ``image rm -f`` (:mod:`.layerusers`)
    .tmp-<PID>-<STARTTIME>-<random>/      work in progress of a process (an import, a pull)
    <id>/.rootfs.<map>.tmp-<PID>-<STARTTIME>-<random>/   a shifted rootfs being made

A work directory is named after the process making it (``PID:STARTTIME``,
:func:`cman._sys.proc.mark`), so one that a killed process left is told apart from one a
live process is still filling.

An image removed while containers still stand on a lower layer of it loses its name, its
tarball and its metadata (it is no image any more), and keeps the folder with those layers
until the last such container is gone (:meth:`ImageStore.collect_orphans`, run by ``image
prune``, ``system prune`` and the removal of a container).

Every import or pull makes a new image, as ``docker import`` does; identical tarballs
are hard-linked. Names (aliases) move like Docker tags: importing under a taken name
moves the name to the new image, and the old one, left without a name, is what
``image prune`` removes (when no container was made from it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import images
from ..._sys import files as _files
from ..._sys import proc as _proc
from ..._sys.times import now_iso
from ...errors import ImageNotFound, InvalidName, InvalidValue
from ...validate import check_config_value
from .idmap import IdMap, shift_tree
from .layerusers import USERS_DIR, layers_in_use


def canonical_name(ref: str) -> str | None:
    """``REGISTRY/REPO:TAG`` of a Docker-style reference; None for anything else."""
    from ...errors import CmanError
    from ...oci.refs import parse

    try:
        return parse(ref).canonical
    except CmanError:
        return None

DEFAULT_STORE = Path("/var/lib/cman/lxc-images")
ALIAS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}")
ALIAS_RULES = (
    "LXC image names are 1-128 characters of letters, digits, '_', '.', ':', '/', '@', '-', starting with a letter or digit"
)

_MAGIC = (
    (b"\x1f\x8b", ".gz"),
    (b"\xfd7zXZ\x00", ".xz"),
    (b"BZh", ".bz2"),
)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
REMOVED_MARK = "removed"
"""In the folder of an image removed while containers stood on it (:meth:`ImageStore.delete`)."""
PLAIN_KEY = "plain"
"""``rootfs.plain``: the image's rootfs unshifted, for privileged containers."""
_INITS = ("sbin/init", "usr/sbin/init")
"""``usr/sbin/init`` for a merged-/usr rootfs (Debian 12's debootstrap: /sbin is a link to usr/sbin)."""

TEMPLATE_CONFIG_KEYS = ("lxc.signal.halt", "lxc.signal.reboot", "lxc.signal.stop", "lxc.mount.entry", "lxc.autodev")
"""Keys of a template's config that an image keeps and every container of it gets."""


def validate_alias(name: str) -> str:
    if not name or len(name) > 128 or not ALIAS_RE.fullmatch(name):
        raise InvalidName(f"invalid image name {name!r}", hint=ALIAS_RULES)
    return name


def _norm(alias: str) -> str:
    """``name`` and ``name:latest`` are the same image name, as with Docker."""
    return alias.removesuffix(":latest")


@dataclass(frozen=True)
class Scan:
    """What a look through the tarball found."""

    prefix: str
    """"" for a plain rootfs; "rootfs" or "./rootfs" for LXD's unified layout."""
    has_init: bool
    has_sh: bool
    unpacked_size: int
    architecture: str | None


def compression_suffix(path: Path) -> str:
    """".gz", ".xz", ".bz2" or "" (plain tar); raises InvalidValue for anything else."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    for magic, suffix in _MAGIC:
        if head.startswith(magic):
            return suffix
    if head.startswith(_ZSTD_MAGIC):
        raise InvalidValue("TARBALL", str(path), "zstd is not supported here: recompress with gzip or xz")
    if len(head) >= 262 and head[257:262] == b"ustar":
        return ""
    raise InvalidValue("TARBALL", str(path), "not a tar archive (.tar, .tar.gz, .tar.xz or .tar.bz2)")


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/").rstrip("/")


def scan_tarball(path: Path) -> Scan:
    """Stream through the archive once: layout, init, size, architecture."""
    import tarfile

    names: set[str] = set()
    raw_prefix = ""
    size = 0
    arch: dict[str, str] = {}
    lxd_arch: str | None = None
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                name = _clean(member.name)
                names.add(name)
                size += member.size if member.isfile() else 0
                if name == "rootfs" or name.startswith("rootfs/"):
                    raw_prefix = "./rootfs" if member.name.startswith("./") else "rootfs"
                inner = name.removeprefix("rootfs/")
                if member.isfile() and inner in images.ARCH_PROBES and inner not in arch:
                    fh = tar.extractfile(member)
                    machine = images.elf_architecture(fh.read(20) if fh is not None else b"")
                    if machine:
                        arch[inner] = machine
                elif member.isfile() and name == "metadata.yaml":
                    fh = tar.extractfile(member)
                    text = fh.read(65536).decode("utf-8", "replace") if fh is not None else ""
                    m = re.search(r"^architecture:\s*['\"]?([A-Za-z0-9_]+)", text, re.MULTILINE)
                    lxd_arch = m.group(1) if m else None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise InvalidValue("TARBALL", str(path), f"cannot read the archive: {err}") from err
    unified = "metadata.yaml" in names and bool(raw_prefix)
    prefix = raw_prefix if unified else ""
    strip = "rootfs/" if unified else ""

    def has(rel: str) -> bool:
        return f"{strip}{rel}" in names

    found_arch = lxd_arch or next((arch[p] for p in images.ARCH_PROBES if p in arch), None)
    return Scan(
        prefix=prefix,
        has_init=any(has(i) for i in _INITS),
        has_sh=has("bin/sh") or has("usr/bin/sh"),
        unpacked_size=size,
        architecture=images.normalize_arch(found_arch),
    )


class ImageStore:
    """The store's directory. Callers hold :meth:`lock` around changes (see :mod:`.images`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    def lock(self) -> Any:
        return _files.locked(self.lock_path)

    # -- reading ---------------------------------------------------------------------

    def all(self) -> list[dict[str, Any]]:
        try:
            dirs = [d for d in self.root.iterdir() if not d.name.startswith(".")]
        except FileNotFoundError:
            return []
        metas = [m for m in (_files.read_json(d / "metadata.json") for d in dirs) if m and m.get("id")]
        return sorted(metas, key=lambda m: str(m.get("created", "")), reverse=True)

    def find(self, ref: str) -> dict[str, Any] | None:
        """By name (``x`` = ``x:latest``), then by full ID or a unique ID prefix (>= 4 hex digits)."""
        metas = self.all()
        want = _norm(ref)
        for meta in metas:
            if want in (_norm(a) for a in meta.get("aliases", [])):
                return meta
        hexpart = ref.removeprefix("sha256:").lower()
        if re.fullmatch(r"[0-9a-f]{4,64}", hexpart):
            hits = [m for m in metas if str(m["id"]).removeprefix("sha256:").startswith(hexpart)]
            if len(hits) == 1:
                return hits[0]
        canonical = canonical_name(ref)  # a registry image, stored under its canonical reference
        if canonical is not None and _norm(canonical) != want:
            for meta in metas:
                if _norm(canonical) in (_norm(a) for a in meta.get("aliases", [])):
                    return meta
        return None

    def get(self, ref: str) -> dict[str, Any]:
        meta = self.find(ref)
        if meta is None:
            raise ImageNotFound(ref, "lxc", f"not in cman's LXC image store {self.root}")
        return meta

    def dir_of(self, meta: dict[str, Any]) -> Path:
        return self.root / str(meta["id"]).removeprefix("sha256:")

    def tarball_of(self, meta: dict[str, Any]) -> Path:
        return self.dir_of(meta) / str(meta["file"])

    # -- writing (caller holds the lock unless said otherwise) ---------------------------

    def new_workdir(self) -> Path:
        """A private directory inside the store (same filesystem: the final move is a rename),
        named after this process (see the module docstring)."""
        self.root.mkdir(parents=True, exist_ok=True)
        work = self.root / f".tmp-{_work_mark()}"
        work.mkdir(mode=0o700)
        return work

    def stage(self, src: Path, work: Path, *, move: bool = False) -> tuple[str, Path, Scan]:
        """Copy (or move) a tarball into ``work``, hashing it; no lock needed."""
        import hashlib

        suffix = compression_suffix(src)
        scan = scan_tarball(src)
        if not scan.has_init:
            raise InvalidValue(
                "TARBALL", str(src),
                "the rootfs has no /sbin/init: a system container boots an init (busybox, systemd-sysv, ...)",
            )
        dest = work / f"rootfs.tar{suffix}"
        digest = hashlib.sha256()
        if move:
            src.rename(dest)
            with open(dest, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        else:
            with open(src, "rb") as fin, open(dest, "wb") as fout:
                while chunk := fin.read(1 << 20):
                    digest.update(chunk)
                    fout.write(chunk)
        return digest.hexdigest(), dest, scan

    def commit(
        self,
        work: Path,
        sha: str,
        staged: Path,
        scan: Scan,
        *,
        alias: str | None,
        source: dict[str, Any],
        lxc_config: Iterable[tuple[str, str]] = (),
        architecture: str | None = None,
        image_config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Move a staged tarball into place as a new image and give it its name.

        Every import or pull makes a new image, as ``docker import`` does (its ID covers
        the tarball's digest and the time); identical tarballs are hard-linked, not copied.
        """
        import hashlib

        config = [[k, check_config_value(k, v)] for k, v in lxc_config]
        created = now_iso()
        image_hex = hashlib.sha256(f"{sha}\n{created}\n{os.urandom(8).hex()}".encode()).hexdigest()
        twin = next((m for m in self.all() if m.get("sha256") == sha and self.tarball_of(m).is_file()), None)
        if twin is not None:
            link = staged.with_name(".link")
            try:
                os.link(self.tarball_of(twin), link)
                os.replace(link, staged)
            except OSError:
                link.unlink(missing_ok=True)
        meta: dict[str, Any] = {
            "id": f"sha256:{image_hex}",
            "sha256": sha,
            "file": staged.name,
            "size": staged.stat().st_size,
            "unpacked_size": scan.unpacked_size,
            "created": created,
            "source": source,
            # Named before it appears: a cman killed between the rename and set_alias leaves a
            # named image (newest wins a shared name, see find), never a nameless one.
            "aliases": [] if alias is None else [alias],
            "architecture": architecture or scan.architecture,
            "rootfs_prefix": scan.prefix,
            "default_command": ["/bin/sh"] if scan.has_sh else [],
            "lxc_config": config,
        }
        if image_config is not None:  # an OCI image's config (cman.oci.imageconfig.stored)
            meta["image_config"] = image_config
        _files.write_json(work / "metadata.json", meta)
        work.rename(self.root / image_hex)
        if alias is not None:
            self.set_alias(meta, alias)
        return meta

    def set_alias(self, meta: dict[str, Any], alias: str) -> None:
        want = _norm(alias)
        for other in self.all():
            if other["id"] != meta["id"] and want in (_norm(a) for a in other.get("aliases", [])):
                other["aliases"] = [a for a in other["aliases"] if _norm(a) != want]
                _files.write_json(self.dir_of(other) / "metadata.json", other)
        if want not in (_norm(a) for a in meta.get("aliases", [])):
            meta["aliases"] = [*meta.get("aliases", []), alias]
        _files.write_json(self.dir_of(meta) / "metadata.json", meta)

    def drop_alias(self, meta: dict[str, Any], alias: str) -> None:
        meta["aliases"] = [a for a in meta.get("aliases", []) if _norm(a) != _norm(alias)]
        _files.write_json(self.dir_of(meta) / "metadata.json", meta)

    def delete(self, meta: dict[str, Any]) -> int:
        """Remove an image with its rootfs caches; returns the bytes freed. A cache that is the
        lower layer of a container's overlay stays, with the folder, until that container goes
        (:meth:`collect_orphans`); the image itself (name, tarball, metadata) goes at once."""
        path = self.dir_of(meta)
        in_use = layers_in_use(path)
        stats = [f.stat() for f in path.iterdir() if f.is_file()]
        freed = sum(st.st_size for st in stats if st.st_nlink == 1)  # a hard-linked twin keeps its bytes
        freed += sum(_tree_size(d) for d in path.iterdir()
                     if d.is_dir() and not d.is_symlink() and d.name != USERS_DIR and d not in in_use)
        if not in_use:
            shutil.rmtree(path)
            return freed
        _files.atomic_write(path / REMOVED_MARK, now_iso(), mode=0o600, fsync=False)
        (path / "metadata.json").unlink(missing_ok=True)  # from here on it is no image
        for entry in path.iterdir():
            if entry in in_use or entry.name in (USERS_DIR, REMOVED_MARK):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        return freed

    # -- lower layers in use (caller holds the lock) --------------------------------------------

    def orphans(self, image_dir: Path | None = None) -> list[Path]:
        """Folders of removed images (marked :data:`REMOVED_MARK` by :meth:`delete`, no metadata)
        that no container stands on any more: ``image_dir`` alone, or all of them."""
        try:
            dirs = [image_dir] if image_dir is not None else [
                d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        except OSError:
            return []
        return [folder for folder in dirs
                if folder.parent == self.root and (folder / REMOVED_MARK).is_file()
                and not (folder / "metadata.json").exists() and not layers_in_use(folder)]

    def collect_orphans(self, image_dir: Path | None = None) -> list[Path]:
        """Remove :meth:`orphans`; returns them."""
        removed = self.orphans(image_dir)
        for folder in removed:
            shutil.rmtree(folder, ignore_errors=True)
        return removed

    def share(self, meta: dict[str, Any], idmap: IdMap) -> bool:
        """Let the containers' root of ``idmap`` pass through the image's folder to a lower layer
        (group ``idmap.gid``, mode 0710, as a container's folder); False when the folder is
        already another map's."""
        path = self.dir_of(meta)
        st = path.stat()
        if st.st_gid not in (0, idmap.gid) or st.st_uid != 0:
            return False
        if st.st_gid != idmap.gid:
            os.chown(path, 0, idmap.gid)
        if stat.S_IMODE(st.st_mode) != 0o710:
            os.chmod(path, 0o710)
        return True

    # -- rootfs: plain, or shifted for an id map (caller holds the lock) -----------------

    def unpack(self, meta: dict[str, Any], dest: Path) -> None:
        """Unpack the image's rootfs into the existing folder ``dest``, owners as in the tarball."""
        argv = ["tar", "-xf", str(self.tarball_of(meta)), "-C", str(dest), "--numeric-owner"]
        prefix = str(meta.get("rootfs_prefix") or "")
        if prefix:
            argv += [f"--strip-components={prefix.count('/') + 1}", prefix]
        _proc.run(argv, timeout=900, backend="lxc")

    def shifted_rootfs(self, meta: dict[str, Any], idmap: IdMap | None) -> Path:
        """The image's rootfs shifted for ``idmap`` (as it is, ``rootfs.plain``, for None), made
        on first use and kept (see :mod:`.idmap`).

        Made in a work folder named after this process, then renamed into place: a reader
        sees a whole cache or none, and a killed maker's half is left to ``prune``.
        """
        final = self.dir_of(meta) / f"rootfs.{idmap.key if idmap is not None else PLAIN_KEY}"
        if final.is_dir():
            return final
        work = final.with_name(f".{final.name}.tmp-{_work_mark()}")
        work.mkdir(mode=0o700)
        try:
            self.unpack(meta, work)
            os.chmod(work, 0o755)  # the container's "/", as a privileged container's rootfs folder
            if idmap is not None:
                shift_tree(work, idmap)
            work.rename(final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return final

    # -- leftovers ---------------------------------------------------------------------------

    def stale_workdirs(self, older_than: float = 3600) -> list[Path]:
        """Work folders whose process is gone (and unmarked ones of older cman versions that
        are older than ``older_than`` seconds); never one of a live process."""
        import time

        candidates: list[Path] = []
        with contextlib.suppress(OSError):
            candidates += self.root.glob(".tmp-*")
            for image_dir in self.root.iterdir():
                if image_dir.is_dir() and not image_dir.name.startswith("."):
                    candidates += image_dir.glob(".rootfs.*.tmp-*")
        stale = []
        for entry in sorted(candidates):
            owner = work_owner(entry.name)
            if owner is not None:
                if _proc.mark_alive(owner) is False:
                    stale.append(entry)
                continue
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime > older_than:
                    stale.append(entry)
        return stale

    def clean_stale_workdirs(self, older_than: float = 3600) -> list[Path]:
        """Remove :meth:`stale_workdirs`, and the folders of removed images that no container
        stands on any more (:meth:`collect_orphans`); returns them."""
        stale = self.stale_workdirs(older_than)
        for entry in stale:
            shutil.rmtree(entry, ignore_errors=True)
        return stale + self.collect_orphans()


def _work_mark() -> str:
    """``PID-STARTTIME-RANDOM``: a work folder's name says which process made it."""
    return f"{_proc.mark().replace(':', '-')}-{os.urandom(4).hex()}"


def work_owner(name: str) -> str | None:
    """The ``PID:STARTTIME`` mark in a work folder's name; None for an unmarked one."""
    m = re.search(r"\.tmp-([0-9]+)-([0-9]+)-[0-9a-f]+$", name)
    return f"{m.group(1)}:{m.group(2)}" if m else None


def _tree_size(root: Path) -> int:
    """Bytes of the regular files beneath ``root``, each inode counted once."""
    seen: set[int] = set()
    total = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(folder, name))
                if stat.S_ISREG(st.st_mode) and st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_size
    return total
