"""The per-host OCI layout: skopeo copies images in, umoci unpacks them into a rootfs.

One layout for every image of the host (``$CMAN_OCI_DIR``, default /var/lib/cman/oci), so
blobs are shared: a second image that shares layers with a first fetches only its new
ones. Which layers a pull fetched is told by the layout's blobs before and after the copy
(skopeo's own lines do not say it when its output is not a terminal). Every image is
kept under a tag key derived from its canonical reference, so the key is always a valid
OCI ref name. Writes to the layout hold its flock (``.lock``); work folders are named
``.tmp-PID-STARTTIME-RANDOM`` (:func:`cman._sys.proc.mark`) so ``system prune`` removes
those of a dead process only (:func:`stale_workdirs`).

A pull holds ``.pulls.lock`` shared from its copy until the engine stored the image
(:func:`in_use`), because its tag is in the layout before the image is on an engine.
:func:`housekeep` (``image prune`` on LXD and LXC) drops the tags of images that no engine
has any more and garbage-collects the blobs no tag reaches (``umoci gc``), only when it gets
both locks at once: while any pull runs, or anything writes, it does nothing.

skopeo reaches a plain-HTTP registry with ``--src-tls-verify=false`` (loopback always,
others when declared insecure in :mod:`cman.config`) and takes the user's credentials
file by path (``--src-authfile``): no secret is ever on a command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

from .._sys import files as _files
from .._sys import proc as _proc
from ..config import Config, auth_file
from ..errors import CmanError, EngineTimeout, ImageNotFound, SourceUnreachable
from ..models import ImageConfig, PullProgress
from .imageconfig import read_layout_config
from .refs import DEFAULT_REGISTRY, Reference

ENV_DIR = "CMAN_OCI_DIR"
DEFAULT_DIR = Path("/var/lib/cman/oci")
COPY_TIMEOUT = 1800.0
LOCK = ".lock"
PULLS_LOCK = ".pulls.lock"
USERS = "cman-users.json"
"""Tag -> the image stores that pulled it (``Backend.layout_user``); written under the lock."""
WORK_RE = re.compile(r"\.tmp-([0-9]+)-([0-9]+)-[0-9a-f]+")
REF_ANNOTATION = "org.opencontainers.image.ref.name"
INIT_SCRIPT = b"""#!/bin/sh
# cman: the init of an OCI image that has none. It idles until the container is halted
# (lxc.signal.halt, SIGPWR by default; SIGTERM, SIGINT), as a system container's init does.
trap 'exit 0' PWR TERM INT HUP
while :; do sleep 3600 & wait $!; done
"""
INIT_PATHS = ("sbin/init", "usr/sbin/init")


@dataclass(frozen=True)
class Fetched:
    """An image now in the layout."""

    reference: Reference
    source: str
    """``REGISTRY/REPO:TAG`` it was copied from (a mirror, or the reference's own registry)."""
    key: str
    manifest: str
    """The manifest's digest: the same digest again means an unchanged image."""
    config: ImageConfig
    layers: tuple[str, ...]
    fetched: tuple[str, ...]
    """Layer digests this pull copied; the others were in the layout already."""


def layout_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR)


def tag_key(ref: Reference) -> str:
    """The layout's ref name for ``ref``: ``cman-`` and a digest of its canonical spelling."""
    return "cman-" + hashlib.sha256(ref.canonical.encode()).hexdigest()[:40]


def sources(ref: Reference, config: Config) -> list[Reference]:
    """Where to copy ``ref`` from: for a docker.io image, the configured mirrors (and only
    them); otherwise its own registry."""
    if ref.registry == DEFAULT_REGISTRY and config.registry_mirrors:
        return [ref.on(m.host) for m in config.registry_mirrors]
    return [ref]


def _blobs(layout: Path) -> set[str]:
    try:
        return {f"sha256:{n}" for n in os.listdir(layout / "blobs" / "sha256")}
    except FileNotFoundError:
        return set()


def manifest_of(layout: Path, key: str) -> str | None:
    """The manifest digest the layout's index.json keeps under ``key``."""
    data = _files.read_json(layout / "index.json") or {}
    for desc in data.get("manifests") or []:
        if isinstance(desc, dict) and (desc.get("annotations") or {}).get(REF_ANNOTATION) == key:
            digest = desc.get("digest")
            return digest if isinstance(digest, str) else None
    return None


def _layers(layout: Path, manifest: str) -> tuple[str, ...]:
    path = layout / "blobs" / "sha256" / manifest.removeprefix("sha256:")
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return ()
    return tuple(str(d.get("digest")) for d in data.get("layers") or [] if isinstance(d, dict))


def fetch(ref: Reference, config: Config, backend: str, user: str | None = None) -> Generator[PullProgress, None, Fetched]:
    """Copy ``ref`` into the layout (from a mirror first, for docker.io); yields progress per
    layer and returns what was fetched. ``user`` (the engine's image store) is recorded as a
    user of the tag (:data:`USERS`)."""
    layout = layout_dir()
    layout.mkdir(parents=True, exist_ok=True)
    key = tag_key(ref)
    authfile = auth_file()
    errors: list[CmanError] = []
    for src in sources(ref, config):
        argv = ["skopeo", "--insecure-policy", "copy", "--remove-signatures"]
        if config.insecure(src.registry):
            argv.append("--src-tls-verify=false")
        if authfile is not None:
            argv += ["--src-authfile", str(authfile)]
        argv += [f"docker://{src.remote}", f"oci:{layout}:{key}"]
        with _files.locked(layout / LOCK):
            before = _blobs(layout)
            done = _proc.run(argv, timeout=COPY_TIMEOUT, check=False, backend=backend)
            manifest = manifest_of(layout, key) if done.returncode == 0 else None
            if manifest is not None and user is not None:
                _add_user(layout, key, user)
        if done.returncode != 0 or manifest is None:
            errors.append(_copy_error(ref, src, backend, done.stderr))
            continue
        layers = _layers(layout, manifest)
        fetched = tuple(d for d in layers if d not in before)
        yield PullProgress(None, f"copied {src.remote}")  # only once it worked: a failure is one line
        for digest in layers:
            yield PullProgress(digest.removeprefix("sha256:")[:12],
                               "Pull complete" if digest in fetched else "Already exists")
        return Fetched(ref, src.remote, key, manifest, read_layout_config(layout, manifest), layers, fetched)
    raise errors[-1] if errors else ImageNotFound(ref.canonical, backend, "no source to copy it from")


def _copy_error(ref: Reference, src: Reference, backend: str, stderr: str) -> CmanError:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    detail = lines[-1] if lines else "skopeo failed"
    msg = re.search(r'msg="(.*)"', detail)  # skopeo logs: time=... level=fatal msg="..."
    detail = (msg.group(1) if msg else detail)[:300]
    low = stderr.lower()
    if "manifest unknown" in low or "name unknown" in low or "not found" in low or "unauthorized" in low:
        return ImageNotFound(ref.canonical, backend, f"{src.remote}: {detail}")
    return SourceUnreachable(src.remote, detail)


def new_workdir() -> Path:
    """A private work folder in the layout's folder (same filesystem as the LXC store's default)."""
    root = layout_dir()
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".tmp-{_proc.mark().replace(':', '-')}-{os.urandom(4).hex()}"
    work.mkdir(mode=0o700)
    return work


def unpack(fetched: Fetched, work: Path, backend: str) -> Path:
    """umoci-unpack the image into ``work/bundle``; returns the rootfs, with an init added
    when the image has none (a system container boots one)."""
    bundle = work / "bundle"
    argv = ["umoci", "unpack"]
    if os.geteuid() != 0:
        argv.append("--rootless")
    argv += ["--image", f"{layout_dir()}:{fetched.key}", str(bundle)]
    with _files.locked(layout_dir() / LOCK):
        _proc.run(argv, timeout=COPY_TIMEOUT, backend=backend)
    rootfs = bundle / "rootfs"
    add_init(rootfs)
    return rootfs


def add_init(rootfs: Path) -> bool:
    """Write :data:`INIT_SCRIPT` as /sbin/init unless the image has an init (merged /usr:
    /usr/sbin/init). Never through a symlink out of the rootfs. True when written."""
    for rel in INIT_PATHS:
        with contextlib.suppress(OSError):
            if _files.stat_beneath(rootfs, rel) is not None:
                return False
    rel = "usr/sbin/init" if os.path.islink(rootfs / "sbin") else "sbin/init"
    _files.write_beneath(rootfs, rel, INIT_SCRIPT, mode=0o755)
    return True


def pack(rootfs: Path, out: Path, backend: str) -> Path:
    """The rootfs as a plain tarball (numeric owners), for an engine's image store."""
    _proc.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(out), "."], timeout=COPY_TIMEOUT,
              backend=backend)
    return out


def stale_workdirs() -> list[Path]:
    """Work folders of processes that are gone."""
    out = []
    with contextlib.suppress(OSError):
        for entry in layout_dir().iterdir():
            m = WORK_RE.fullmatch(entry.name)
            if m and _proc.mark_alive(f"{m.group(1)}:{m.group(2)}") is False:
                out.append(entry)
    return out


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def in_use() -> Iterator[None]:
    """Held by a pull from the copy until its image is stored on the engine: :func:`housekeep`
    never drops a tag meanwhile."""
    with _files.locked(layout_dir() / PULLS_LOCK, shared=True):
        yield


@dataclass(frozen=True)
class Housekeeping:
    dropped: tuple[str, ...] = ()
    """Tag keys removed (:func:`tag_key`)."""
    freed: int = 0
    """Bytes of blobs removed."""
    busy: bool = False
    """Another process held the layout: nothing was done."""


def tags(layout: Path) -> dict[str, str]:
    """Tag -> manifest digest, as index.json lists them."""
    data = _files.read_json(layout / "index.json") or {}
    out = {}
    for desc in data.get("manifests") or []:
        if isinstance(desc, dict):
            name = (desc.get("annotations") or {}).get(REF_ANNOTATION)
            if isinstance(name, str) and isinstance(desc.get("digest"), str):
                out[name] = desc["digest"]
    return out


def _blob_bytes(layout: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(layout / "blobs" / "sha256"):
            with contextlib.suppress(OSError):
                total += entry.stat(follow_symlinks=False).st_size
    return total


def _add_user(layout: Path, key: str, user: str) -> None:
    users = _files.read_json(layout / USERS) or {}
    users[key] = sorted({*users.get(key, []), user})
    _files.write_json(layout / USERS, users)


def housekeep(live: set[str], asked: set[str], backend: str) -> Housekeeping:
    """Drop cman's tags (``cman-...``) not in ``live`` whose every user (:data:`USERS`) is in
    ``asked`` (a tag of a store that was not asked, or of no known store, is kept), then
    remove the blobs no tag reaches. Does nothing when another process holds either lock."""
    layout = layout_dir()
    if not (layout / "index.json").is_file():
        return Housekeeping()
    try:
        with _files.locked(layout / PULLS_LOCK, timeout=0), _files.locked(layout / LOCK, timeout=0):
            before = _blob_bytes(layout)
            users = _files.read_json(layout / USERS) or {}
            dropped = tuple(k for k in sorted(tags(layout)) if k.startswith("cman-") and k not in live
                            and users.get(k) and set(users[k]) <= asked)
            for key in dropped:
                _proc.run(["umoci", "rm", "--image", f"{layout}:{key}"], timeout=COPY_TIMEOUT, backend=backend)
            if dropped:
                _files.write_json(layout / USERS, {k: v for k, v in users.items() if k not in dropped})
            _proc.run(["umoci", "gc", "--layout", str(layout)], timeout=COPY_TIMEOUT, backend=backend)
            return Housekeeping(dropped, max(0, before - _blob_bytes(layout)))
    except EngineTimeout:
        return Housekeeping(busy=True)
