"""Raw LXC backend over the ``lxc-*`` tools (``lxc-start``, ``lxc-attach``, ``lxc-info``, ...).

Every tool runs through :mod:`._proc` (argv lists, a timeout on each call, errors that keep
argv, exit code and stderr), with ``-P LXCPATH`` from ``$CMAN_LXC_PATH`` (default
/var/lib/lxc). State is always read back with ``lxc-info``/``lxc-ls``, never guessed from
a tool's stderr. Only the dashed raw tools are used: Debian's ``lxc`` (no dash) is LXD's client.

**Files.** A container is ``LXCPATH/NAME/`` holding ``config`` (written by cman from the
container's settings; every value checked with :func:`~cman.validate.check_config_value`
before it is written), ``rootfs/`` (the image's tarball unpacked), ``cman.json`` (the mark
of a managed container: image, command, env, labels, limits, created), ``cman.state.json``
(runs: started, finished, exit code), ``console.log`` (init's console, via
``lxc.console.logfile``), ``cman.log`` (the command's output, stdout and stderr framed in
order) and ``lxc.log`` (LXC's own errors). Images live in cman's store (see
:mod:`._lxc_images`). ``LXCPATH/.cman.lock`` and the store's ``.lock`` are ``flock`` locks
held around create, destroy and image changes, so concurrent cman processes serialise
those (lock order: lxcpath, then store).

**Semantics of run (system containers).**

- The container boots its image's init (``lxc-start -d``, then ``lxc-wait -s RUNNING``);
  ``CMD`` runs inside it as *the container's command* via ``lxc-attach``, with a clean
  environment (``--clear-env``; PATH, HOME, TERM with a tty, then ``-e`` variables).
- ``run IMAGE CMD`` (foreground) returns CMD's exit code. ``run -d IMAGE CMD`` leaves CMD
  running in the background: a small detached supervisor (``python -m
  cman.backends._lxc_job``, no shell) runs ``lxc-attach -- CMD``, copies its output to
  ``cman.log`` and records its exit code. lxc-attach puts CMD in the container's cgroups,
  so its CPU and memory are accounted to the container.
- The container lives as long as its command, as with Docker: when CMD exits, the
  container is stopped (killed, as Docker kills what is left when PID 1 exits) and its
  state shows the exit code. ``start`` of a stopped container runs CMD again.
- With no CMD: ``run -d`` boots the container and leaves init running (a plain system
  container, until ``cman stop``); ``run -i``/``-it`` runs the image's default command
  (``/bin/sh``); ``run`` without ``-i`` boots the container and returns 0.
- ``--rm`` with ``-d`` sets ``lxc.ephemeral = 1``: LXC destroys the container when it stops.
- ``logs`` prints the console log (init's output) and then the command's output;
  ``logs -f`` follows both until the container stops. Output of ``-t`` sessions goes to
  the terminal only.
- ``--env`` applies to the command and to ``exec``, not to init. Labels live in cman.json.

**Networks.** Raw LXC has no network object: cman records each network of an LXC path
in ``LXCPATH/.cman-networks/NAME.json``, makes the bridge itself and installs the host
rules, and gives each container on a network one veth (``eth0``) with an address it
allocates from the subnet under :func:`cman.network.host_lock` (details in
:mod:`._lxc_net`). Without ``--network`` (or with ``--network none``) a container has
loopback only (``lxc.net.0.type = empty``). ``--dns``/``--dns-search`` (or the network's)
are written into the rootfs's ``/etc/resolv.conf`` at create. The address is the
container's from create to rm, so ``inspect`` shows it (under the network's name) also
while the container is stopped. Lock order: the network lock, then the LXC path's, then
the image store's; the network lock is never taken while the LXC path's is held.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import images, jobs
from .._sys import files as _files
from .._sys import proc as _proc
from .._sys.times import ago, now_iso, parse_time
from ..errors import (
    CmanError,
    Conflict,
    ContainerNotFound,
    EngineError,
    EngineUnavailable,
    ImageNotFound,
    InUse,
    InvalidName,
    InvalidValue,
    NameInUse,
    Unsupported,
)
from ..models import (
    Container,
    ContainerSpec,
    EngineStatus,
    Image,
    ImageLayer,
    LogChunk,
    PruneResult,
    PullProgress,
    State,
    StdIO,
)
from ..validate import check_config_value, check_name
from . import _lxc_net, _reach
from ._lxc_images import DEFAULT_STORE, TEMPLATE_CONFIG_KEYS, ImageStore, created_by, to_image, validate_alias
from .base import Backend, Feature

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..cgroups import CgroupMounts
    from ..network import Network, NetworkSpec

ENV_LXC_PATH = "CMAN_LXC_PATH"
ENV_IMAGES = "CMAN_LXC_IMAGES"
ENV_DOWNLOAD_SERVER = "CMAN_LXC_DOWNLOAD_SERVER"
DEFAULT_LXC_PATH = "/var/lib/lxc"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULES = (
    "LXC container names are 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
)
COMMON_CONF = ("/usr/share/lxc/config/common.conf", "/usr/local/share/lxc/config/common.conf")
OFFLINE_TEMPLATES = frozenset({"busybox"})
"""Templates that build a rootfs from the host alone; others download (debootstrap, ...)."""
CPU_PERIOD_US = 100_000

_CONFIG_KEY = re.compile(r"lxc(\.[a-z0-9_]+)+")
_RUNNING = frozenset({"RUNNING", "STARTING", "STOPPING", "FREEZING", "FROZEN", "THAWED"})
_STATES = {
    "STOPPED": State.STOPPED,
    "STARTING": State.RUNNING,
    "RUNNING": State.RUNNING,
    "STOPPING": State.RUNNING,
    "ABORTING": State.DEAD,
    "FREEZING": State.PAUSED,
    "FROZEN": State.PAUSED,
    "THAWED": State.RUNNING,
}


# -- pure helpers (unit-tested) -----------------------------------------------------------


def lxc_path_from_env() -> str:
    """$CMAN_LXC_PATH (default /var/lib/lxc), checked: it goes into every config."""
    value = os.environ.get(ENV_LXC_PATH) or DEFAULT_LXC_PATH
    check_config_value(ENV_LXC_PATH, value)
    if not os.path.isabs(value):
        raise InvalidValue(ENV_LXC_PATH, value, "must be an absolute path")
    return os.path.normpath(value)


def image_store_from_env() -> Path:
    value = os.environ.get(ENV_IMAGES) or str(DEFAULT_STORE)
    check_config_value(ENV_IMAGES, value)
    if not os.path.isabs(value):
        raise InvalidValue(ENV_IMAGES, value, "must be an absolute path")
    return Path(os.path.normpath(value))


def parse_info(text: str) -> tuple[str | None, int | None]:
    """``lxc-info -s -p`` output -> (STATE, PID)."""
    state: str | None = None
    pid: int | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "state":
            state = value.upper() or None
        elif key == "pid" and value.isdigit():
            pid = int(value)
    return state, pid


def parse_ls(text: str) -> dict[str, tuple[str, int | None]]:
    """``lxc-ls -f -F NAME,STATE,PID`` output -> {name: (STATE, PID)}."""
    out: dict[str, tuple[str, int | None]] = {}
    lines = text.splitlines()
    for line in lines[1:]:  # the first line is the header
        parts = line.split()
        if len(parts) < 2:
            continue
        pid = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
        out[parts[0]] = (parts[1].upper(), pid)
    return out


def limit_settings(cpus: float | None, memory: int | None, mounts: CgroupMounts | None) -> list[tuple[str, str]]:
    """Config keys for --cpus/--memory on this host's cgroup layout.

    A controller mounted as cgroup v1 takes ``lxc.cgroup.*``; otherwise, when the v2 tree
    offers it, ``lxc.cgroup2.*``. Hybrid hosts mix both (this one: cpu and memory on v1).
    """
    out: list[tuple[str, str]] = []
    if cpus is None and memory is None:
        return out
    v1 = dict(mounts.v1) if mounts is not None else {}
    v2_controllers: set[str] = set()
    if mounts is not None and mounts.v2 is not None:
        with contextlib.suppress(OSError):
            v2_controllers = set((mounts.v2 / "cgroup.controllers").read_text().split())
    if cpus is not None:
        quota = max(1000, round(cpus * CPU_PERIOD_US))
        if "cpu" in v1:
            out += [("lxc.cgroup.cpu.cfs_period_us", str(CPU_PERIOD_US)), ("lxc.cgroup.cpu.cfs_quota_us", str(quota))]
        elif "cpu" in v2_controllers:
            out.append(("lxc.cgroup2.cpu.max", f"{quota} {CPU_PERIOD_US}"))
        else:
            raise Unsupported("lxc", str(Feature.CPU_LIMIT), "this host has no cpu cgroup controller")
    if memory is not None:
        if "memory" in v1:
            out.append(("lxc.cgroup.memory.limit_in_bytes", str(memory)))
        elif "memory" in v2_controllers:
            out.append(("lxc.cgroup2.memory.max", str(memory)))
        else:
            raise Unsupported("lxc", str(Feature.MEMORY_LIMIT), "this host has no memory cgroup controller")
    return out


def render_config(entries: Sequence[tuple[str, str] | str]) -> str:
    """Config text from (key, value) pairs and comment strings; every value is checked first."""
    lines: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            lines.append(f"# {entry}" if entry else "")
            continue
        key, value = entry
        if not _CONFIG_KEY.fullmatch(key):
            raise InvalidValue("LXC config key", key, "not an lxc.* key")
        lines.append(f"{key} = {check_config_value(key, value)}")
    return "\n".join(lines) + "\n"


# -- paths and tool calls --------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """Where one container's files live."""

    lxcpath: str
    name: str

    @property
    def dir(self) -> Path:
        return Path(self.lxcpath) / self.name

    @property
    def config(self) -> Path:
        return self.dir / "config"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def meta(self) -> Path:
        return self.dir / "cman.json"

    @property
    def state(self) -> Path:
        return self.dir / "cman.state.json"

    @property
    def state_lock(self) -> Path:
        return self.dir / ".cman.state.lock"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def lxclog(self) -> Path:
        return self.dir / "lxc.log"



def tool(lxcpath: str, name: str, *args: str, timeout: float = 30, check: bool = True) -> _proc.Completed:
    """Run ``lxc-NAME -P LXCPATH ARGS`` through the subprocess gateway."""
    return _proc.run([name, "-P", lxcpath, *args], timeout=timeout, check=check, backend="lxc")


def info(lxcpath: str, name: str) -> tuple[str | None, int | None]:
    """(STATE, PID) read back from ``lxc-info``; (None, None) when the container is gone."""
    if not Paths(lxcpath, name).config.exists():
        return None, None
    done = tool(lxcpath, "lxc-info", "-n", name, "-s", "-p", check=False, timeout=15)
    if done.returncode != 0:
        if not Paths(lxcpath, name).config.exists():
            return None, None
        raise _proc.ProcError(done.argv, done.returncode, done.stdout, done.stderr)
    return parse_info(done.stdout)


class StartFailed(EngineError):
    """lxc-start returned, but the container is not running."""


class LxcBackend(Backend):
    """Raw LXC through the lxc-* tools. See the module docstring for the semantics."""

    name = "lxc"
    # No daemon: no remote endpoint, and template pulls report no byte progress.
    capabilities = frozenset(Feature) - {Feature.PULL_PROGRESS, Feature.REMOTE}
    system_containers = True

    def __init__(self) -> None:
        self.lxcpath = lxc_path_from_env()
        self.store = ImageStore(image_store_from_env())
        self.net_records = _lxc_net.Records(self.lxcpath)
        if shutil.which("lxc-start") is None:
            status = self.probe()
            raise EngineUnavailable(
                "lxc", status.problem or "lxc-start is not installed", status.fix or "apt-get install lxc"
            )

    # -- engine ---------------------------------------------------------------------------

    @classmethod
    def probe(cls) -> EngineStatus:
        try:
            lxcpath = lxc_path_from_env()
        except CmanError as err:
            return EngineStatus("lxc", shutil.which("lxc-start") is not None, False, False,
                                problem=str(err), fix=f"set {ENV_LXC_PATH} to an absolute directory, or unset it")
        if shutil.which("lxc-start") is None:
            clash = " (the `lxc` on PATH is LXD's client, not the raw LXC tools)" if shutil.which("lxc") else ""
            return EngineStatus("lxc", False, False, False, endpoint=lxcpath,
                                problem=f"the raw LXC tools are not installed: no lxc-start on PATH{clash}",
                                fix="install them: apt-get install lxc")
        try:
            version = _proc.run(["lxc-ls", "--version"], timeout=10, backend="lxc").stdout.strip() or None
        except CmanError as err:
            return EngineStatus("lxc", True, False, False, endpoint=lxcpath,
                                problem=f"the LXC tools do not run: {err}",
                                fix="reinstall them: apt-get install --reinstall lxc")
        existing = Path(lxcpath)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            return EngineStatus("lxc", True, True, False, version=version, endpoint=lxcpath,
                                problem=f"no write access to {existing} (the LXC path)",
                                fix=f"run as root, or set {ENV_LXC_PATH} to a directory you own")
        return EngineStatus("lxc", True, True, True, version=version, endpoint=lxcpath)

    @classmethod
    def reachable(cls) -> bool:
        return _reach.reachable("lxc")

    @classmethod
    def validate_name(cls, name: str) -> None:
        check_name(name, NAME_RE, 64, NAME_RULES)
        check_config_value("container name", name)

    # -- internals ----------------------------------------------------------------------------

    def _paths(self, name: str) -> Paths:
        return Paths(self.lxcpath, name)

    def _tool(self, name: str, *args: str, timeout: float = 30, check: bool = True) -> _proc.Completed:
        return tool(self.lxcpath, name, *args, timeout=timeout, check=check)

    @property
    def _lock_path(self) -> Path:
        return Path(self.lxcpath) / ".cman.lock"

    def _existing(self, ref: str) -> Paths:
        """Validate ``ref`` and make sure the container exists; raises ContainerNotFound."""
        try:
            self.validate_name(ref)
        except CmanError:
            raise ContainerNotFound(ref, "lxc") from None
        paths = self._paths(ref)
        if not paths.config.is_file():
            raise ContainerNotFound(ref, "lxc")
        return paths

    def _info(self, paths: Paths) -> tuple[str | None, int | None]:
        with self._boundary(paths.name, "read the state of"):
            return info(self.lxcpath, paths.name)

    @contextlib.contextmanager
    def _boundary(self, name: str, action: str) -> Iterator[None]:
        """Translate a failed lxc-* call into cman's errors, once, from the state read back."""
        try:
            yield
        except _proc.ProcError as err:
            if not self._paths(name).config.exists():
                raise ContainerNotFound(name, "lxc") from err
            raise EngineError(
                f"lxc: could not {action} {name}: {err.message}",
                hint=f"see {self._paths(name).lxclog}",
            ) from err

    def _meta(self, paths: Paths) -> dict[str, Any]:
        return _files.read_json(paths.meta) or {}

    def _update_state(self, paths: Paths, **changes: Any) -> dict[str, Any]:
        return _files.update_json(paths.state, paths.state_lock, **changes)

    @staticmethod
    def _first_error(paths: Paths, offset: int) -> str:
        """The first ERROR that LXC logged after ``offset`` in lxc.log: the cause, not the echo."""
        try:
            with open(paths.lxclog, "rb") as fh:
                fh.seek(offset)
                text = fh.read(65536).decode("utf-8", "replace")
        except OSError:
            return ""
        for line in text.splitlines():
            if " ERROR " in line:
                parts = line.split(" - ", 2)
                return parts[2].strip() if len(parts) == 3 else line.strip()
        return ""

    # -- images ---------------------------------------------------------------------------------

    def pull(self, ref: str) -> Iterator[PullProgress]:
        """``template:busybox`` builds an image with LXC's busybox template (offline);
        ``[download:]DIST/RELEASE[/ARCH]`` uses the ``download`` template, which needs an image
        server: set $CMAN_LXC_DOWNLOAD_SERVER (none is contacted otherwise). A name already in
        cman's store is up to date; a short name (``ubuntu``, ``debian:12``) maps through
        :mod:`cman.images`."""
        check_config_value("image", ref)
        if self.store.find(ref) is None and (mapped := images.short_names("lxc").get(ref)):
            yield PullProgress(None, f"{ref} is {mapped}")
            ref = mapped
        kind, _, rest = ref.partition(":")
        if kind == "template":
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", rest):
                raise InvalidName(f"invalid template name in {ref!r}", hint="write template:busybox")
            if rest not in OFFLINE_TEMPLATES:
                raise Unsupported(
                    "lxc", f"pull {ref}",
                    "only template:busybox builds offline; make a rootfs tarball and `cman image import` it",
                )
            validate_alias(ref)
            yield from self._pull_template(ref, rest, [])
            return
        spec = rest if kind == "download" else ref
        parts = spec.split("/")
        if "/" in spec and 2 <= len(parts) <= 3 and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", p) for p in parts):
            server = os.environ.get(ENV_DOWNLOAD_SERVER)
            if not server:
                err = ImageNotFound(
                    ref, "lxc", "the download template needs an image server and none is reachable here;"
                    " nothing was sent",
                )
                err.hint = (f"use template:busybox, `cman image import TARBALL NAME`, or set {ENV_DOWNLOAD_SERVER}"
                            " to a mirror you can reach")
                raise err
            check_config_value(ENV_DOWNLOAD_SERVER, server)
            import platform

            arch = parts[2] if len(parts) == 3 else {"x86_64": "amd64", "aarch64": "arm64"}.get(
                platform.machine(), platform.machine())
            args = ["--server", server, "-d", parts[0], "-r", parts[1], "-a", arch]
            yield from self._pull_template(validate_alias(ref), "download", args)
            return
        meta = self.store.find(ref)
        if meta is None:
            raise ImageNotFound(
                ref, "lxc", "not in cman's LXC image store; pull takes template:busybox or DIST/RELEASE[/ARCH]"
            )
        yield PullProgress(None, f"{ref}: image is up to date (cman's LXC store, {str(meta['id'])[:19]})")

    def _pull_template(self, alias: str, template: str, args: list[str]) -> Iterator[PullProgress]:
        """Create a throw-away container with the template in a private LXC path inside the
        store, pack its rootfs into a tarball, store that as an image, destroy the container."""
        work = self.store.new_workdir()
        tmp_name = "cman-pull"
        conf = work / "create.conf"
        conf.write_text(render_config([("lxc.net.0.type", "empty"), ("lxc.apparmor.profile", "unconfined")]))
        try:
            yield PullProgress(None, f"creating a rootfs with LXC's {template} template")
            argv = ["-n", tmp_name, "-t", template, "-f", str(conf)]
            if args:
                argv += ["--", *args]
            try:
                tool(str(work), "lxc-create", *argv, timeout=900)
            except _proc.ProcError as err:
                raise EngineError(f"lxc: the {template} template failed: {err.message}") from err
            yield PullProgress(None, "packing the rootfs")
            packed = work / "packed.tar.gz"
            rootfs = work / tmp_name / "rootfs"
            _proc.run(["tar", "-C", str(rootfs), "--numeric-owner", "-czf", str(packed), "."], timeout=900,
                      backend="lxc")
            lxc_config = self._template_config(work / tmp_name / "config")
            with contextlib.suppress(CmanError):
                tool(str(work), "lxc-destroy", "-n", tmp_name, timeout=120, check=False)
            stage = self.store.new_workdir()
            try:
                sha, staged, scan = self.store.stage(packed, stage, move=True)
                import platform

                with self.store.lock():
                    meta = self.store.commit(
                        stage, sha, staged, scan, alias=alias, lxc_config=lxc_config,
                        source={"kind": "template", "template": template, "args": args, "ref": alias},
                        architecture=scan.architecture or (platform.machine() if template == "busybox" else None),
                    )
            except BaseException:
                shutil.rmtree(stage, ignore_errors=True)
                raise
            yield PullProgress(None, f"stored image {str(meta['id'])[:19]} as {alias}")
        finally:
            if (work / tmp_name).exists():
                with contextlib.suppress(CmanError):
                    tool(str(work), "lxc-destroy", "-n", tmp_name, timeout=120, check=False)
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _template_config(config: Path) -> list[tuple[str, str]]:
        """The template's settings an image keeps (signals, mount entries); the rest cman writes."""
        out: list[tuple[str, str]] = []
        try:
            text = config.read_text()
        except OSError:
            return out
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if sep and key in TEMPLATE_CONFIG_KEYS and value and not value.startswith("-"):
                out.append((key, value))
        return out

    def images(self) -> list[Image]:
        return [to_image(m) for m in self.store.all()]

    def image_inspect(self, ref: str) -> Image:
        return to_image(self.store.get(ref))

    def image_history(self, ref: str) -> list[ImageLayer]:
        meta = self.store.get(ref)
        image = to_image(meta)
        source = meta.get("source") or {}
        return [ImageLayer(id=image.id, created=image.created, created_by=created_by(meta), size=image.size,
                           comment=f"rootfs tarball ({source.get('kind', '?')}) in cman's LXC image store")]

    def _image_users(self, image_id: str) -> list[str]:
        users = []
        for entry in self._container_dirs():
            meta = _files.read_json(Path(self.lxcpath) / entry / "cman.json") or {}
            if meta.get("image_id") == image_id:
                users.append(entry)
        return users

    def image_remove(self, ref: str, *, force: bool = False) -> None:
        """An image name that is one of several names of an image is simply dropped (Docker's
        untag); otherwise the image goes, refused (InUse) while a container of this LXC path
        was made from it, unless ``force``. Containers keep working: their rootfs is a copy."""
        with _files.locked(self._lock_path), self.store.lock():
            meta = self.store.get(ref)
            aliases = [a.removesuffix(":latest") for a in meta.get("aliases", [])]
            if ref.removesuffix(":latest") in aliases and len(aliases) > 1:
                self.store.drop_alias(meta, ref)
                return
            users = self._image_users(str(meta["id"]))
            if users and not force:
                raise InUse(f"image {ref} is in use by container(s) {', '.join(users)}",
                            hint="remove them first (cman rm -f NAME), or use --force")
            self.store.delete(meta)

    def image_prune(self) -> PruneResult:
        """Remove images that have no name and that no container of this LXC path was made
        from. An image loses its last name when another tarball is imported (or pulled)
        under that name, or when ``image rm`` drops one of its names."""
        removed: list[str] = []
        freed = 0
        with _files.locked(self._lock_path), self.store.lock():
            self.store.clean_stale_workdirs()
            for meta in self.store.all():
                if meta.get("aliases") or self._image_users(str(meta["id"])):
                    continue
                freed += self.store.delete(meta)
                removed.append(str(meta["id"]))
        return PruneResult(removed=tuple(removed), reclaimed_bytes=freed)

    def image_import(self, tarball: Path, name: str) -> Image:
        validate_alias(name)
        check_config_value("image name", name)
        if name.startswith(("template:", "download:")):
            raise InvalidValue("image name", name, "template: and download: are pull syntax")
        src = Path(tarball).resolve()
        if not src.is_file():
            raise InvalidValue("TARBALL", str(tarball), "no such file")
        work = self.store.new_workdir()
        try:
            sha, staged, scan = self.store.stage(src, work)
            with self.store.lock():
                meta = self.store.commit(work, sha, staged, scan, alias=name,
                                         source={"kind": "import", "path": str(src)})
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return to_image(meta)

    # -- containers -------------------------------------------------------------------------------

    def _check_spec(self, spec: ContainerSpec) -> dict[str, Any] | None:
        """Check the spec before any work; returns the record of the network to join, if any."""
        from ..network import check_container_ip, check_dns_servers, check_network_name, check_search_domains

        check_dns_servers(spec.dns)
        check_search_domains(spec.dns_search)  # they go into a file: no line may sneak in
        network = spec.network if spec.network not in _lxc_net.RESERVED_NAMES else None
        if spec.ip is not None and network is None:
            raise InvalidValue("--ip", spec.ip, "needs --network NAME (a network with a subnet)")
        if network is None:
            return None
        check_network_name(network)
        record = self.net_records.get(network)
        if spec.ip is not None:
            check_container_ip(_lxc_net.to_network(record), spec.ip)
        return record

    def _network_settings(self, paths: Paths, network: Network | None,
                          address: str | None) -> list[tuple[str, str] | str]:
        """One veth on the network's bridge with the allocated address, or loopback only."""
        if network is None or address is None or not network.bridge or not network.subnet:
            return list(_lxc_net.EMPTY_NETWORK)
        hook = None if network.icc else paths.dir / _lxc_net.HOOK_NAME
        prefixlen = int(network.subnet.rpartition("/")[2])
        return _lxc_net.veth_entries(network.name, network.bridge, address, prefixlen, network.gateway, hook,
                                     _lxc_net.new_hwaddr())

    def _config_entries(self, paths: Paths, spec: ContainerSpec, image: dict[str, Any],
                        limits: list[tuple[str, str]], network: Network | None = None,
                        address: str | None = None) -> list[tuple[str, str] | str]:
        common = next((c for c in COMMON_CONF if os.path.isfile(c)), None)
        entries: list[tuple[str, str] | str] = [
            "Written by cman (LXC backend) from the container's settings; cman.json holds the rest.",
        ]
        if common:
            entries.append(("lxc.include", common))
        if image.get("architecture"):
            entries.append(("lxc.arch", str(image["architecture"])))
        entries += [
            ("lxc.rootfs.path", f"dir:{paths.rootfs}"),
            ("lxc.uts.name", paths.name),
            ("lxc.apparmor.profile", "unconfined"),
            ("lxc.console.logfile", str(paths.console)),
            ("lxc.log.file", str(paths.lxclog)),
            "",
            *self._network_settings(paths, network, address),
        ]
        if limits:
            entries += ["", "limits", *limits]
        image_config = [(str(k), str(v)) for k, v in image.get("lxc_config", [])
                        if k in TEMPLATE_CONFIG_KEYS]
        if image_config:
            entries += ["", "from the image", *image_config]
        if spec.auto_remove:
            entries += ["", "--rm: LXC destroys the container when it stops", ("lxc.ephemeral", "1")]
        return entries

    def _limits(self, spec: ContainerSpec) -> list[tuple[str, str]]:
        if spec.cpus is None and spec.memory is None:
            return []
        from ..cgroups import CgroupError, find_mounts

        try:
            mounts = find_mounts()
        except CgroupError as err:
            raise Unsupported("lxc", "limits", str(err)) from err
        return limit_settings(spec.cpus, spec.memory, mounts)

    def _container_dirs(self) -> list[str]:
        try:
            entries = os.listdir(self.lxcpath)
        except FileNotFoundError:
            return []
        return sorted(
            e for e in entries if not e.startswith(".") and os.path.isfile(os.path.join(self.lxcpath, e, "config"))
        )

    def create(self, spec: ContainerSpec) -> Container:
        name = spec.name if spec.name is not None else f"cman-{secrets.token_hex(4)}"
        self.validate_name(name)
        joining = self._check_spec(spec)
        check_config_value("image", spec.image)
        limits = self._limits(spec)
        paths = self._paths(name)
        for key in spec.env:
            if not key or "=" in key or "\0" in key:
                raise InvalidValue("-e/--env", key, "bad variable name")
        made = False
        with _files.locked(self._lock_path):
            if paths.dir.exists():
                raise NameInUse(name, "lxc")
            with self.store.lock():
                image = self.store.get(spec.image)
                config = render_config(self._config_entries(paths, spec, image, limits))
                try:
                    paths.dir.mkdir(mode=0o770)
                    made = True
                    _files.write_json(paths.meta, {
                        "managed": True,
                        "name": name,
                        "image": spec.image,
                        "image_id": image["id"],
                        "command": list(spec.command),
                        "default_command": list(image.get("default_command", [])),
                        "env": dict(spec.env),
                        "labels": dict(spec.labels),
                        "tty": spec.tty,
                        "interactive": spec.interactive,
                        "cpus": spec.cpus,
                        "memory": spec.memory,
                        "auto_remove": spec.auto_remove,
                        "created": now_iso(),
                        "network": None,
                        "ip": None,
                        "dns": list(spec.dns),
                        "dns_search": list(spec.dns_search),
                    })
                    _files.write_json(paths.state, {"run": 0, "started": None, "finished": None, "exit_code": None})
                    paths.rootfs.mkdir(mode=0o755)
                    tarball = self.store.tarball_of(image)
                    argv = ["tar", "-xf", str(tarball), "-C", str(paths.rootfs), "--numeric-owner"]
                    prefix = str(image.get("rootfs_prefix") or "")
                    if prefix:
                        argv += [f"--strip-components={prefix.count('/') + 1}", prefix]
                    _proc.run(argv, timeout=900, backend="lxc")
                    if joining is None:
                        self._write_dns(paths, None, spec)
                        self._write_config(paths, config)  # last: only now does lxc-ls see the container
                except BaseException:
                    if made:
                        shutil.rmtree(paths.dir, ignore_errors=True)
                    raise
        if joining is not None:
            # The address is allocated under the host-wide network lock, taken without the
            # LXC path's lock held (lock order); until the config exists no other cman
            # process sees this container, and the directory keeps its name taken.
            try:
                self._join_network(paths, spec, image, limits, str(joining["name"]))
            except BaseException:
                shutil.rmtree(paths.dir, ignore_errors=True)
                raise
        return self.inspect(name)

    @staticmethod
    def _write_config(paths: Paths, config: str) -> None:
        tmp = paths.dir / ".config.tmp"
        tmp.write_text(config)
        os.replace(tmp, paths.config)

    @staticmethod
    def _write_dns(paths: Paths, network: Network | None, spec: ContainerSpec) -> None:
        """The container's --dns/--dns-search, each falling back to the network's, into its
        rootfs's resolv.conf; with none at all the image's file stays."""
        from ..network import container_dns, render_resolv_conf

        servers, search = container_dns(network, spec.dns, spec.dns_search)
        if servers or search:
            _lxc_net.write_resolv_conf(paths.rootfs, render_resolv_conf(servers, search))

    def _join_network(self, paths: Paths, spec: ContainerSpec, image: dict[str, Any],
                      limits: list[tuple[str, str]], network: str) -> None:
        """Allocate the container's address, then write its network config, resolv.conf and
        the network's record, all under the network lock; on failure nothing stays allocated."""
        from ..network import check_container_ip, host_lock

        with host_lock():
            record = self.net_records.get(network)  # it may have gone meanwhile
            net = _lxc_net.to_network(record)
            if spec.ip is not None:
                check_container_ip(net, spec.ip)
            address = _lxc_net.allocate(record, paths.name, spec.ip, self._on_network(network))
            config = render_config(self._config_entries(paths, spec, image, limits, net, address))
            if not net.icc:
                _lxc_net.write_hook(paths.dir / _lxc_net.HOOK_NAME)
            self._write_dns(paths, net, spec)
            meta = self._meta(paths)
            meta.update(network=network, ip=address)
            _files.write_json(paths.meta, meta)
            self.net_records.save(record)
            try:
                self._write_config(paths, config)
            except BaseException:
                with contextlib.suppress(CmanError, OSError):
                    self._release_address(paths.name, network)
                raise

    def _boot(self, paths: Paths) -> int | None:
        """Start the container unless it runs; return its init PID."""
        st, pid = self._info(paths)
        if st in _RUNNING:
            return pid
        state = _files.read_json(paths.state) or {}
        previous = {k: state.get(k) for k in ("started", "finished")}
        network = self._network_up(paths)
        self._update_state(paths, started=now_iso(), finished=None)
        try:
            log_offset = paths.lxclog.stat().st_size
        except OSError:
            log_offset = 0
        done = self._tool("lxc-start", "-n", paths.name, "-d", timeout=60, check=False)
        st, pid = info(self.lxcpath, paths.name)
        if st in ("STARTING",):
            self._tool("lxc-wait", "-n", paths.name, "-s", "RUNNING", "-t", "10", timeout=20, check=False)
            st, pid = info(self.lxcpath, paths.name)
        if st not in _RUNNING or pid is None:
            detail = self._first_error(paths, log_offset) or (done.stderr.strip().splitlines() or ["no error logged"])[-1]
            with contextlib.suppress(OSError, CmanError):  # it never ran: back to what it was (e.g. "created")
                self._update_state(paths, **previous)
            raise StartFailed(
                f"lxc: container {paths.name} did not start: {detail}",
                hint=f"see {paths.lxclog}, or watch it boot: lxc-start -P {self.lxcpath} -n {paths.name} -F",
            )
        if network is not None and not network.icc and network.bridge:
            self._isolate(paths, pid, network)
        return pid

    def _network_up(self, paths: Paths) -> Network | None:
        """The container's network, its bridge and host rules made again if the bridge is
        missing (after a reboot nothing of the host side survives); None without one."""
        name = self._meta(paths).get("network")
        record = self.net_records.find(str(name)) if name else None
        if record is None:
            return None  # no network, or its record went by hand: lxc-start says what is missing
        net = _lxc_net.to_network(record)
        from ..network import netfilter

        if net.bridge and net.gateway and net.subnet and not netfilter.link_exists(net.bridge):
            from ..network import host_lock

            with host_lock():
                if not netfilter.link_exists(net.bridge):
                    netfilter.create_bridge(net.bridge, net.gateway, int(net.subnet.rpartition("/")[2]))
                    netfilter.ensure_bridge_rules(net.name, net.bridge, icc=net.icc)
        hook = paths.dir / _lxc_net.HOOK_NAME
        if not net.icc and not hook.exists():  # LXC refuses to start without it
            _lxc_net.write_hook(hook)
        return net

    def _isolate(self, paths: Paths, pid: int, network: Network) -> None:
        """No ICC: make sure the container's bridge port is isolated (the start hook did it
        already; this checks it and covers a config written by hand). If that cannot be
        done the container is killed: it must not run with less isolation than promised."""
        from ..network import isolation

        assert network.bridge

        def stop() -> None:
            self._tool("lxc-stop", "-n", paths.name, "-k", timeout=60, check=False)
            with contextlib.suppress(OSError):
                self._update_state(paths, finished=now_iso())

        isolation.enforce("lxc", paths.name, pid, [isolation.Port(network.name, network.bridge)], stop=stop)

    def start(self, ref: str) -> None:
        paths = self._existing(ref)
        st, _ = self._info(paths)
        if st in _RUNNING:
            return
        self._boot(paths)
        command = self._meta(paths).get("command") or []
        if command:
            jobs.launch(self, paths.name, command)

    def start_attached(self, ref: str, io: StdIO) -> int:
        paths = self._existing(ref)
        meta = self._meta(paths)
        self._boot(paths)
        command = list(meta.get("command") or [])
        if not command and io.stdin is not None:
            command = list(meta.get("default_command") or ["/bin/sh"])
        if not command:
            return 0  # a system container was asked for: it stays up
        return jobs.run_foreground(self, paths.name, command, io)

    # -- what the job runner needs (cman.jobs.JobHost) ----------------------------------------

    def job_state(self, ref: str) -> State | None:
        st, _ = self._info(self._paths(ref))
        return None if st is None else _STATES.get(st, State.UNKNOWN)

    def read_file(self, ref: str, path: str) -> bytes | None:
        paths = self._paths(ref)
        try:
            return _files.read_beneath(paths.rootfs, path)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise EngineError(f"lxc: cannot read {path} in {ref}: {err.strerror or err}") from err

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        paths = self._paths(ref)
        try:
            _files.write_beneath(paths.rootfs, path, data)
        except OSError as err:
            raise EngineError(f"lxc: cannot write {path} in {ref}: {err.strerror or err}") from err

    def exec_attached(self, ref: str, command: Sequence[str], io: StdIO) -> int:
        from ._lxc_attach import attach_argv, attach_env, run_attached

        meta = self._meta(self._paths(ref))
        tty = io.tty or bool(meta.get("tty"))
        argv = attach_argv(self.lxcpath, ref, command, attach_env(meta.get("env") or {}, None, tty=tty))
        return run_attached(argv, StdIO(io.stdin, io.stdout, io.stderr, tty), tty=tty)

    def exec_detached(self, ref: str, argv: Sequence[str]) -> None:
        """lxc-attach in a session of its own, not waited for: it lives as long as the job."""
        from ._lxc_attach import attach_argv, attach_env, spawn

        paths = self._paths(ref)
        meta = self._meta(paths)
        full = attach_argv(self.lxcpath, ref, argv, attach_env(meta.get("env") or {}, None, tty=False))
        with open(paths.lxclog, "ab") as errors:
            spawn(full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                  start_new_session=True, close_fds=True)

    def halt_signal(self, ref: str) -> int:
        """``lxc.signal.halt`` of the container's config (the image's template may set it), else SIGPWR."""
        value = None
        with contextlib.suppress(OSError):
            for line in self._paths(ref).config.read_text().splitlines():
                key, sep, val = line.partition("=")
                if sep and key.strip() == "lxc.signal.halt":
                    value = val.strip()
        return jobs.parse_signal(value)

    def kill(self, ref: str) -> None:
        with self._boundary(ref, "kill"):
            self._tool("lxc-stop", "-n", ref, "-k", timeout=60, check=False)

    def stop(self, ref: str, *, timeout: float = 10) -> None:
        paths = self._existing(ref)
        st, _ = self._info(paths)
        if st not in _RUNNING:
            return
        grace = max(0, math.ceil(timeout))
        with self._boundary(paths.name, "stop"):
            if grace > 0:
                self._tool("lxc-stop", "-n", paths.name, "-t", str(grace), timeout=grace + 30, check=False)
            st, _ = info(self.lxcpath, paths.name)
            if st in _RUNNING:
                self._tool("lxc-stop", "-n", paths.name, "-k", timeout=60, check=False)
                st, _ = info(self.lxcpath, paths.name)
        if st in _RUNNING:
            raise EngineError(f"lxc: container {paths.name} is still {st} after lxc-stop -k",
                              hint=f"see {paths.lxclog}")
        if paths.dir.exists():
            with contextlib.suppress(OSError, CmanError):
                state = _files.read_json(paths.state) or {}
                if not state.get("finished"):
                    self._update_state(paths, finished=now_iso())

    def remove(self, ref: str, *, force: bool = False) -> None:
        paths = self._existing(ref)
        network = self._meta(paths).get("network")
        with _files.locked(self._lock_path):
            if not paths.config.exists():  # removed meanwhile (an ephemeral one stopping, another cman)
                raise ContainerNotFound(ref, "lxc")
            st, _ = self._info(paths)
            if st in _RUNNING:
                if not force:
                    raise Conflict(f"container {paths.name} is running",
                                   hint=f"stop it first (cman stop lxc:{paths.name}) or use rm -f")
                with self._boundary(paths.name, "kill"):
                    self._tool("lxc-stop", "-n", paths.name, "-k", timeout=60, check=False)
                    st, _ = info(self.lxcpath, paths.name)
                if st in _RUNNING:
                    raise EngineError(f"lxc: container {paths.name} is still {st} after lxc-stop -k")
            if paths.config.exists():
                done = self._tool("lxc-destroy", "-n", paths.name, timeout=300, check=False)
                if done.returncode != 0 and paths.config.exists():
                    st, _ = info(self.lxcpath, paths.name)
                    if st in _RUNNING:
                        raise EngineError(f"lxc: could not destroy {paths.name}: it is {st}")
            shutil.rmtree(paths.dir, ignore_errors=True)  # cman's own files, or what lxc-destroy left
        if network:  # after the LXC path's lock: the network lock comes first in the lock order
            self._release_address(paths.name, str(network))

    def _container(self, paths: Paths, st: str | None, pid: int | None) -> Container:
        meta = _files.read_json(paths.meta)
        managed = bool(meta and meta.get("managed"))
        meta = meta or {}
        state_file = _files.read_json(paths.state) or {}
        state = _STATES.get(st or "", State.UNKNOWN)
        started, finished = parse_time(state_file.get("started")), parse_time(state_file.get("finished"))
        exit_code: int | None = None
        if state == State.STOPPED and meta.get("command") and started:
            exit_code, ended = self._job_end(paths)
            if ended is not None and (finished is None or ended > finished):
                finished = ended
        if state == State.STOPPED and managed and not started:
            state, status = State.CREATED, "Created"
        elif state == State.RUNNING:
            status = f"Up {ago(started)}" if started else "Up"
        elif state == State.STOPPED:
            code = f" ({exit_code})" if exit_code is not None else ""
            status = f"Exited{code} {ago(finished)} ago" if finished else f"Exited{code}"
        else:
            status = (st or "unknown").lower()
        return Container(
            backend="lxc",
            id=paths.name,
            name=paths.name,
            image=str(meta.get("image", "")),
            state=state,
            status=status,
            managed=managed,
            created=parse_time(meta.get("created")),
            command=tuple(meta.get("command") or ()),
            labels=dict(meta.get("labels") or {}),
            pid=pid if state in (State.RUNNING, State.PAUSED) else None,
            exit_code=exit_code,
            addresses={str(meta["network"]): str(meta["ip"])} if meta.get("network") and meta.get("ip") else {},
            extra={
                "lxc_state": st,
                "lxcpath": self.lxcpath,
                "config": str(paths.config),
                "rootfs": str(paths.rootfs),
                "image_id": meta.get("image_id"),
                "env": meta.get("env") or {},
                "tty": bool(meta.get("tty")),
                "cpus": meta.get("cpus"),
                "memory": meta.get("memory"),
                "auto_remove": bool(meta.get("auto_remove")),
                "started_at": state_file.get("started"),
                "finished_at": state_file.get("finished"),
                "console_log": str(paths.console),
                "network": meta.get("network"),
                "dns": meta.get("dns") or [],
                "dns_search": meta.get("dns_search") or [],
            },
        )

    def containers(self, *, all: bool = False) -> list[Container]:  # noqa: A002
        """One ``lxc-ls -f`` call for every state and PID, plus each container's cman.json."""
        names = self._container_dirs()
        done = self._tool("lxc-ls", "-f", "-F", "NAME,STATE,PID", timeout=30)
        states = parse_ls(done.stdout)
        out = []
        for name in names:
            st, pid = states.get(name, (None, None))
            if st is None:
                continue  # not a container lxc-ls accepts (broken config, being created)
            container = self._container(self._paths(name), st, pid)
            if all or container.state in (State.RUNNING, State.PAUSED, State.RESTARTING):
                out.append(container)
        return out

    def inspect(self, ref: str) -> Container:
        paths = self._existing(ref)
        st, pid = self._info(paths)
        if st is None:
            raise ContainerNotFound(ref, "lxc")
        return self._container(paths, st, pid)

    def exec(
        self,
        ref: str,
        command: Sequence[str],
        io: StdIO,
        *,
        env: dict[str, str] | None = None,
    ) -> int:
        from ._lxc_attach import attach_argv, attach_env, run_attached

        paths = self._existing(ref)
        st, _ = self._info(paths)
        if st not in _RUNNING:
            raise Conflict(f"container {paths.name} is not running",
                           hint=f"start it first: cman start lxc:{paths.name}")
        meta = self._meta(paths)
        argv = attach_argv(self.lxcpath, paths.name, command, attach_env(meta.get("env") or {}, env, tty=io.tty))
        return run_attached(argv, io, tty=io.tty)

    def _job_end(self, paths: Paths) -> tuple[int, datetime | None]:
        """The job's recorded exit code and when it was recorded (from the rootfs, no tool call)."""
        from datetime import UTC

        try:
            code = jobs.parse_rc(_files.read_beneath(paths.rootfs, jobs.JOB_RC))
            st = _files.stat_beneath(paths.rootfs, jobs.JOB_RC)
        except OSError:
            return jobs.KILLED_EXIT, None
        when = datetime.fromtimestamp(st.st_mtime, tz=UTC) if st is not None else None
        return (jobs.KILLED_EXIT if code is None else code), when

    def logs(self, ref: str, *, follow: bool = False) -> Iterator[LogChunk]:
        """The job's output; for a container without a job, init's console log."""
        paths = self._existing(ref)
        if self._meta(paths).get("command"):
            yield from jobs.logs(self, paths.name, follow=follow)
            return
        console = _files.TailReader(paths.console)
        while True:
            running = follow and self.job_state(paths.name) == State.RUNNING
            data = console.read()
            if data:
                yield LogChunk("stdout", data)
            if not running:
                return
            time.sleep(jobs.POLL)

    def wait(self, ref: str) -> int:
        """Until the container stops (it stops when its command exits); the command's exit
        code, or 0 for a container without a command."""
        paths = self._existing(ref)
        if self._meta(paths).get("command"):
            return jobs.wait(self, paths.name)
        while self.job_state(paths.name) not in (None, State.STOPPED, State.DEAD):
            time.sleep(jobs.POLL)
        return 0

    def init_pid(self, ref: str) -> int | None:
        paths = self._existing(ref)
        with self._boundary(paths.name, "read the init PID of"):
            out = self._tool("lxc-info", "-n", paths.name, "-p", "-H", timeout=15).stdout.strip()
        return int(out) if out.isdigit() else None

    # -- networks (see _lxc_net) ----------------------------------------------------------------

    @classmethod
    def validate_network_spec(cls, spec: NetworkSpec) -> None:
        if spec.name in _lxc_net.RESERVED_NAMES:
            raise InvalidName(f"invalid network name {spec.name!r}",
                              hint="`--network none` means loopback only; choose another name")

    def _on_network(self, network: str) -> Callable[[str], bool]:
        """Is a container (by name) still there and still on ``network``? Judges allocations."""
        def alive(container: str) -> bool:
            if not NAME_RE.fullmatch(container):
                return False
            paths = self._paths(container)
            return paths.config.is_file() and self._meta(paths).get("network") == network

        return alive

    def _release_address(self, container: str, network: str) -> None:
        from ..network import host_lock

        with host_lock():
            record = self.net_records.find(network)
            if record is not None and _lxc_net.release(record, container, self._on_network(network)):
                self.net_records.save(record)

    def _network(self, record: dict[str, Any], *, detail: bool = False) -> Network:
        name = str(record["name"])
        containers = sorted(_lxc_net.live_allocations(record, self._on_network(name)))
        extra: dict[str, Any] = {"record": str(self.net_records.path(name))}
        if detail:
            from ..network import isolation, netfilter

            bridge = str(record.get("bridge") or "")
            extra.update(
                allocations=_lxc_net.live_allocations(record, self._on_network(name)),
                bridge_present=netfilter.link_exists(bridge),
                host_rules=[str(r) for r in netfilter.list_rules(name, bridge or None)],
                isolated_ports=sorted(p for p, iso in isolation.bridge_ports(bridge).items() if iso),
            )
        return _lxc_net.to_network(record, containers, extra)

    def network_create(self, spec: NetworkSpec) -> Network:
        """Make the bridge (with the gateway address), install the host rules, then write
        the record; on failure all three are undone."""
        from ..network import host_lock, netfilter

        if not spec.resolved or spec.bridge is None or spec.gateway is None:
            raise ValueError(f"network_create needs a resolved spec, got {spec}")
        self.validate_network_spec(spec)
        with host_lock():
            if self.net_records.find(spec.name) is not None:
                raise Conflict(f"network {spec.name} already exists on lxc",
                               hint=f"remove it first: cman network rm lxc:{spec.name}")
            if netfilter.link_exists(spec.bridge):
                raise Conflict(f"interface {spec.bridge} already exists on this host",
                               hint="choose another --bridge, or remove that interface")
            record = _lxc_net.new_record(spec)
            try:
                netfilter.create_bridge(spec.bridge, spec.gateway, spec.prefixlen)
                netfilter.ensure_bridge_rules(spec.name, spec.bridge, icc=spec.icc)
                self.net_records.save(record)
            except BaseException:
                with contextlib.suppress(CmanError, OSError):
                    self.net_records.delete(spec.name)
                with contextlib.suppress(CmanError):
                    netfilter.remove_rules(spec.name, spec.bridge)
                with contextlib.suppress(CmanError):
                    netfilter.delete_link(spec.bridge)
                raise
        return self._network(record, detail=True)

    def networks(self) -> list[Network]:
        """The networks cman recorded in this LXC path (raw LXC has no others)."""
        return [self._network(r) for r in self.net_records.all()]

    def network_inspect(self, name: str) -> Network:
        return self._network(self.net_records.get(name), detail=True)

    def network_remove(self, name: str, *, force: bool = False) -> None:
        """Refused while containers are on it, unless ``force``: then each one keeps
        everything but its network (config ``lxc.net.0.type = empty``, veth deleted if it
        runs). Then the bridge, the host rules and the record (with its allocations) go."""
        from ..network import host_lock, netfilter

        with host_lock():
            record = self.net_records.get(name)
            users = sorted(_lxc_net.live_allocations(record, self._on_network(name)))
            if users and not force:
                raise InUse(f"network {name} is in use by container(s) {', '.join(users)}",
                            hint=f"remove them first, or `cman network rm -f lxc:{name}` to disconnect them")
            bridge = str(record.get("bridge") or "")
            for container in users:
                self._detach(container, name, bridge)
            if bridge:
                netfilter.delete_link(bridge)
                netfilter.remove_rules(name, bridge)
            self.net_records.delete(name)

    def _detach(self, container: str, network: str, bridge: str) -> None:
        """Take ``container`` off ``network`` for good, keeping the container (under host_lock)."""
        from ..network import isolation, netfilter

        paths = self._paths(container)
        with _files.locked(self._lock_path):
            if not paths.config.is_file():
                return
            self._write_config(paths, _lxc_net.detach_config(paths.config.read_text()))
            (paths.dir / _lxc_net.HOOK_NAME).unlink(missing_ok=True)
            meta = self._meta(paths)
            if meta.get("network") == network:
                meta.update(network=None, ip=None)
                _files.write_json(paths.meta, meta)
            st, pid = self._info(paths)
            if st in _RUNNING and pid is not None and bridge:
                with contextlib.suppress(CmanError):
                    netfilter.delete_link(isolation.container_port(pid, bridge))
