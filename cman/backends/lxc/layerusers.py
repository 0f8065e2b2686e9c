"""Which containers stand on a lower layer of an image (:mod:`.rootfs`), so the layer outlives
``image rm -f`` until the last of them is gone (:meth:`.store.ImageStore.delete`).

Each such container has a record in the image's folder, ``<id>/users/<hash>``: its folder and
the layer, written when it is made. A record is only a hint: it is live while the container's
folder exists and its ``cman.json`` names that layer, so a container that LXC destroyed itself
(``--rm``), or a folder of another LXC path that is gone, needs no bookkeeping; a dead record
is dropped when it is read. Callers hold the store's lock.
"""

from __future__ import annotations

from pathlib import Path

from ..._sys import files as _files

USERS_DIR = "users"


def add_user(image_dir: Path, lower: Path, container_dir: Path) -> None:
    """Record that the container in ``container_dir`` stands on ``lower``, a layer in ``image_dir``."""
    import hashlib

    users = image_dir / USERS_DIR
    users.mkdir(mode=0o700, exist_ok=True)
    key = hashlib.sha256(str(container_dir).encode()).hexdigest()[:32]
    _files.atomic_write(users / key, f"{container_dir}\n{lower}\n", mode=0o600, fsync=False)


def layers_in_use(image_dir: Path) -> set[Path]:
    """The layers of ``image_dir`` that a container still stands on (dead records are dropped)."""
    live: set[Path] = set()
    try:
        records = list((image_dir / USERS_DIR).iterdir())
    except OSError:
        return live
    for record in records:
        try:
            container, lower = record.read_text().splitlines()[:2]
        except (OSError, ValueError):
            continue
        meta = _files.read_json(Path(container) / "cman.json") or {}
        if meta.get("rootfs_lower") == lower and Path(lower).parent == image_dir:
            live.add(Path(lower))
        else:
            record.unlink(missing_ok=True)
    return live
