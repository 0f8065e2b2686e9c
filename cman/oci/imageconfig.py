"""An OCI image's config (Entrypoint, Cmd, Env, WorkingDir, User) read and applied in Python.

Read from the per-host OCI layout (index.json -> manifest -> config blob). User is
resolved through the unpacked rootfs's /etc/passwd and /etc/group, read without following
a symlink out of the rootfs. On system containers (LXD, LXC) the job runner follows it the
way Incus and lxc-oci do: Entrypoint + Cmd is the command when ``run`` gives none,
Env the environment (``-e`` wins), and WorkingDir and User apply to the job through
:data:`JOB_PREFIX`, a constant sh script that takes them as positional arguments; ``exec``
follows WorkingDir and User the same way (:data:`EXEC_LABEL`), as ``docker exec`` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._sys import files as _files
from ..errors import InvalidValue

if TYPE_CHECKING:
    from ..models import Image, ImageConfig

JOB_PREFIX = (
    'd=$1 u=$2 g=$3 n=$4; shift 4; '
    'if [ -n "$d" ]; then cd -- "$d" || exit 125; fi; '
    '[ -z "$u" ] && exec "$@"; '
    'if setpriv --reuid="$u" --regid="$g" --clear-groups true >/dev/null 2>&1; then '
    'if [ -n "$n" ]; then exec setpriv --reuid="$u" --regid="$g" --init-groups -- "$@"; fi; '
    'exec setpriv --reuid="$u" --regid="$g" --clear-groups -- "$@"; fi; '
    'if [ -n "$n" ]; then '
    'if command -v su >/dev/null 2>&1; then exec su -m -s /bin/sh "$n" -c \'exec "$@"\' -- cman-su "$@"; fi; '
    'exec busybox su -m -s /bin/sh "$n" -c \'exec "$@"\' -- cman-su "$@"; fi; '
    'echo "cman: the image has no setpriv to run as uid $u" >&2; exit 125'
)
"""Runs CMD ("$@") in WorkingDir as User: util-linux ``setpriv`` (Debian's minbase has it),
else ``su`` (busybox's applet too) for a user with a name. A constant: the values arrive as
positional arguments, never inside the script."""
JOB_PREFIX_ARGV0 = "cman-oci"


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidValue("image config", what, "must be a list of strings")
    return tuple(value)


def from_blob(data: Mapping[str, Any]) -> ImageConfig:
    """An OCI/Docker image config JSON (its ``config`` object) -> ImageConfig (user unresolved)."""
    from ..models import ImageConfig

    cfg = data.get("config")
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, Mapping):
        raise InvalidValue("image config", "config", "not an object")
    workdir = cfg.get("WorkingDir") or ""
    user = cfg.get("User") or ""
    if not isinstance(workdir, str) or not isinstance(user, str):
        raise InvalidValue("image config", "WorkingDir/User", "must be strings")
    return ImageConfig(entrypoint=_strings(cfg.get("Entrypoint"), "Entrypoint"), cmd=_strings(cfg.get("Cmd"), "Cmd"),
                       env=_strings(cfg.get("Env"), "Env"), workdir=workdir, user=user)


def _table(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            parts = line.split(":")
            if len(parts) >= fields:
                rows.append(parts)
    return rows


def resolve_user(user: str, passwd: str, group: str) -> tuple[int, int]:
    """``name``, ``uid``, ``uid:gid``, ``name:group`` (any mix) -> (uid, gid), as Docker
    resolves them: a numeric uid not in passwd has gid 0; a name must exist."""
    if not user:
        return 0, 0
    who, colon, grp = user.partition(":")
    users = _table(passwd, 4)
    if who.isdigit():
        uid = int(who)
        row = next((r for r in users if r[2] == who), None)
    else:
        row = next((r for r in users if r[0] == who), None)
        if row is None or not row[2].isdigit():
            raise InvalidValue("image user", user, f"no user {who!r} in the image's /etc/passwd")
        uid = int(row[2])
    gid = int(row[3]) if row is not None and row[3].isdigit() else 0
    if colon:
        if grp.isdigit():
            gid = int(grp)
        else:
            grow = next((r for r in _table(group, 3) if r[0] == grp), None)
            if grow is None or not grow[2].isdigit():
                raise InvalidValue("image user", user, f"no group {grp!r} in the image's /etc/group")
            gid = int(grow[2])
    if uid > 0xFFFFFFFE or gid > 0xFFFFFFFE:
        raise InvalidValue("image user", user, "uid/gid out of range")
    return uid, gid


def resolve(config: ImageConfig, rootfs: Path) -> ImageConfig:
    """``config`` with ``uid``/``gid`` resolved through the rootfs's passwd and group files."""
    import dataclasses

    def text(rel: str) -> str:
        try:
            data = _files.read_beneath(rootfs, rel)
        except OSError:  # a symlinked /etc: nothing is read through it
            data = None
        return (data or b"").decode("utf-8", "replace")

    uid, gid = resolve_user(config.user, text("etc/passwd"), text("etc/group"))
    return dataclasses.replace(config, uid=uid, gid=gid)


def user_name(config: ImageConfig) -> str:
    """The user's name when the image named it (for supplementary groups), else ""."""
    who = config.user.partition(":")[0]
    return "" if not who or who.isdigit() else who


def to_extra(config: ImageConfig) -> dict[str, Any]:
    """``Image.extra["config"]``: the same keys on every engine."""
    return {"entrypoint": list(config.entrypoint), "cmd": list(config.cmd), "env": list(config.env),
            "workdir": config.workdir, "user": config.user}


def from_extra(data: Any) -> ImageConfig | None:
    """Back from a stored record (LXC metadata, an LXD property); None when absent or bad."""
    if not isinstance(data, Mapping):
        return None
    try:
        cfg = from_blob({"config": {"Entrypoint": data.get("entrypoint"), "Cmd": data.get("cmd"),
                                    "Env": data.get("env"), "WorkingDir": data.get("workdir"),
                                    "User": data.get("user")}})
    except InvalidValue:
        return None
    uid, gid = data.get("uid"), data.get("gid")
    import dataclasses

    return dataclasses.replace(cfg, uid=uid if isinstance(uid, int) else None,
                               gid=gid if isinstance(gid, int) else None)


def image_extra(stored_config: Any) -> dict[str, Any]:
    """``Image.extra`` entries of an image pulled from a registry on LXD or LXC: ``config``
    (the same keys as on Docker) and ``config_ids`` (User resolved); {} for other images.
    A JSON string (an LXD property) is read first."""
    if isinstance(stored_config, str):
        try:
            stored_config = json.loads(stored_config)
        except ValueError:
            return {}
    config = from_extra(stored_config)
    if config is None:
        return {}
    return {"config": to_extra(config), "config_ids": {"uid": config.uid, "gid": config.gid}}


def stored(config: ImageConfig) -> dict[str, Any]:
    """What an engine stores: :func:`to_extra` plus the resolved ids."""
    return {**to_extra(config), "uid": config.uid, "gid": config.gid}


def job(config: ImageConfig | None, command: Sequence[str], env: Mapping[str, str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The command and environment of a job on a system container, following the image:
    Entrypoint + (the given command, else Cmd); the image's Env under ``env``; WorkingDir
    and User through :data:`JOB_PREFIX` when they are set."""
    if config is None:
        return tuple(command), dict(env)
    argv = (*config.entrypoint, *(command or config.cmd))
    merged: dict[str, str] = {}
    for entry in config.env:
        key, eq, value = entry.partition("=")
        if key and eq:
            merged[key] = value
    merged.update(env)
    if not argv:
        return (), merged
    return _as_user(config.workdir, config.uid or 0, config.gid or 0, user_name(config), argv), merged


def _as_user(workdir: str, uid: int, gid: int, name: str, argv: Sequence[str]) -> tuple[str, ...]:
    """``argv`` run in ``workdir`` as ``uid``/``gid`` through :data:`JOB_PREFIX`; unchanged when
    neither is set (root in the container's own cwd)."""
    if not (workdir or uid or gid):
        return tuple(argv)
    user = str(uid) if (uid or gid) else ""
    return ("/bin/sh", "-c", JOB_PREFIX, JOB_PREFIX_ARGV0, workdir, user, str(gid), name, *argv)


EXEC_LABEL = "cman.exec"
"""A system container's label (LXD: ``user.cman.label.cman.exec``; LXC: its metadata), set at
create when its image has a WorkingDir or User: what ``exec`` follows, as ``docker exec``
follows the container's config. cman's own namespace, so no user label can set it."""


def exec_label(config: ImageConfig | None) -> str | None:
    """The :data:`EXEC_LABEL` value for a container of an image with ``config`` (User
    resolved), or None when exec needs nothing (no WorkingDir, root)."""
    if config is None or not (config.workdir or config.uid or config.gid):
        return None
    return json.dumps({"workdir": config.workdir, "uid": config.uid or 0, "gid": config.gid or 0,
                       "user": user_name(config)}, sort_keys=True, separators=(",", ":"))


def exec_argv(label: str | None, command: Sequence[str]) -> tuple[str, ...]:
    """``command`` as ``exec`` runs it in a container whose :data:`EXEC_LABEL` is ``label``:
    in the image's WorkingDir as its User. A label that is not cman's shape is ignored
    (the command runs as root, as it did before the label existed)."""
    try:
        data = json.loads(label) if label else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not command:
        return tuple(command)
    workdir, uid, gid, name = data.get("workdir"), data.get("uid"), data.get("gid"), data.get("user")
    if not (isinstance(workdir, str) and isinstance(name, str) and type(uid) is int and type(gid) is int
            and 0 <= uid <= 0xFFFFFFFE and 0 <= gid <= 0xFFFFFFFE and "\0" not in workdir + name):
        return tuple(command)
    return _as_user(workdir, uid, gid, name, command)


def of_image(image: Image) -> ImageConfig | None:
    """The config an engine's image carries (``extra["config"]`` and ``config_ids``), or None."""
    stored_config = image.extra.get("config")
    if not isinstance(stored_config, dict):
        return None
    ids = image.extra.get("config_ids")
    return from_extra({**stored_config, **(ids if isinstance(ids, dict) else {})})


TARBALL_READ_LIMIT = 1 << 20
"""/etc/passwd and /etc/group larger than this are not read (no image has such files)."""


def resolve_in_tarball(config: ImageConfig, tarball: Path) -> ImageConfig:
    """``config`` with User resolved through the passwd and group files of a rootfs tarball
    (plain, or LXD's unified ``rootfs/``); kept as it is when already resolved. Only regular
    members are read: a symlinked /etc/passwd gives nothing, as :func:`resolve` does."""
    import dataclasses
    import tarfile

    if config.uid is not None and config.gid is not None:
        return config
    found: dict[str, bytes] = {}
    wanted = {"etc/passwd", "etc/group", "rootfs/etc/passwd", "rootfs/etc/group"}
    try:
        with tarfile.open(tarball, "r|*") as tar:
            for member in tar:
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                name = name.lstrip("/")
                if name in wanted and member.isfile() and member.size <= TARBALL_READ_LIMIT:
                    fh = tar.extractfile(member)
                    found[name] = fh.read() if fh is not None else b""
    except (tarfile.TarError, OSError, EOFError) as err:
        raise InvalidValue("TARBALL", str(tarball), f"cannot read the archive: {err}") from None

    def text(rel: str) -> str:
        return (found.get(rel) or found.get(f"rootfs/{rel}") or b"").decode("utf-8", "replace")

    uid, gid = resolve_user(config.user, text("etc/passwd"), text("etc/group"))
    return dataclasses.replace(config, uid=uid, gid=gid)


def read_layout_config(layout: Path, manifest_digest: str) -> ImageConfig:
    """The config of the manifest ``manifest_digest`` in an OCI layout."""
    manifest = _blob_json(layout, manifest_digest)
    desc = manifest.get("config") or {}
    return from_blob(_blob_json(layout, str(desc.get("digest", ""))))


def _blob_json(layout: Path, digest: str) -> dict[str, Any]:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or not hexpart.isalnum():
        raise InvalidValue("OCI layout", digest, "not a sha256 digest")
    try:
        data = json.loads((layout / "blobs" / "sha256" / hexpart).read_bytes())
    except (OSError, ValueError) as err:
        raise InvalidValue("OCI layout", digest, f"unreadable blob ({err})") from None
    if not isinstance(data, dict):
        raise InvalidValue("OCI layout", digest, "not a JSON object")
    return data
