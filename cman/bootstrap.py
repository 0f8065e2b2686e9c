"""Debian base images from the host's package mirror: the rootfs of ``cman image bootstrap``.

Sites often have a Debian package mirror and no image registry, so cman builds a base image
the way Debian does, with ``debootstrap --variant=minbase RELEASE DIR MIRROR``, from the
mirror the host's apt already uses (``/etc/apt/sources.list`` and ``sources.list.d``, one-line
and deb822 ``.sources`` files). Nothing else is contacted. The rootfs gets an init
(``sysvinit-core``) because LXD and LXC boot one; Docker ignores it.

The tarball is cached per release and architecture (:func:`cache_dir`); ``no_cache`` rebuilds.
One build at a time holds the cache's lock; a build works in ``.build-PID-STARTTIME``
(:func:`cman._sys.proc.mark`), so the folder of a killed build is recognised as dead and
removed by the next build, after unmounting what debootstrap mounted inside it. No engine
is imported here: :mod:`cman.imagesync` imports the tarball into engines.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import images
from ._sys import files as _files
from ._sys import proc as _proc
from .errors import EngineError, EngineTimeout, EngineUnavailable, InvalidValue

ENV_CACHE = "CMAN_BOOTSTRAP_CACHE"
DEFAULT_CACHE = Path("/var/lib/cman/bootstrap")
SCRIPTS = Path("/usr/share/debootstrap/scripts")
APT_DIR = Path("/etc/apt")
INCLUDE = ("sysvinit-core",)
"""An init for system containers (LXD, LXC): minbase has none, and without one they do not boot."""
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
NOT_DEBIAN = frozenset({"ascii", "beowulf", "ceres", "chimaera", "daedalus", "excalibur"})
"""Devuan's releases: debootstrap links their scripts to Debian's, but a Debian mirror has none."""
BUILD_TIMEOUT = 1800.0
STAGE = re.compile(r"^I: (\S+)")
_URI = re.compile(r"(https?|file)://[^\s\x00-\x1f\x7f]+")
_RELEASE = re.compile(r"[a-z][a-z0-9.-]{0,63}")


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` entry of apt's configuration: its URIs and suites."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    origin: str
    """The file it came from (for messages)."""


_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,99}")


@dataclass(frozen=True)
class Target:
    distro: str
    release: str
    arch: str
    packages: tuple[str, ...] = ()
    """Debian packages installed on top of minbase and :data:`INCLUDE` (``docker.io``, ...)."""
    flavour: str | None = None
    """A short word for ``packages`` in names (``docker``): ``debian-docker:bookworm``."""

    def __post_init__(self) -> None:
        for package in self.packages:
            if not _PACKAGE.fullmatch(package):
                raise InvalidValue("package", package, "not a Debian package name")
        if self.flavour is not None and not _RELEASE.fullmatch(self.flavour):
            raise InvalidValue("flavour", self.flavour, "lower-case letters, digits, '.' and '-'")

    @property
    def name(self) -> str:
        """The default image name (``debian:bookworm``): valid on Docker, LXD and LXC."""
        distro = f"{self.distro}-{self.flavour}" if self.flavour else self.distro
        return f"{distro}:{self.release}"

    @property
    def cache_name(self) -> str:
        distro = f"{self.distro}-{self.flavour}" if self.flavour else self.distro
        return f"{distro}-{self.release}-{self.arch}.tar.gz"

    def with_packages(self, flavour: str, packages: Iterable[str]) -> Target:
        """The same release with ``packages`` installed too, cached and named as ``flavour``."""
        return Target(self.distro, self.release, self.arch, tuple(packages), flavour)


@dataclass(frozen=True)
class Built:
    """A bootstrapped rootfs tarball, and whether it came from the cache."""

    tarball: Path
    target: Target
    cached: bool
    seconds: float
    mirror: str | None


# -- apt's sources ------------------------------------------------------------------------------


def parse_one_line(text: str, origin: str = "sources.list") -> list[AptSource]:
    """``deb [options] URI SUITE [COMPONENT...]`` lines; ``deb-src`` and comments are skipped."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=amd64 signed-by=...]
        words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            out.append(AptSource((words[1],), (words[2],), origin))
    return out


def parse_deb822(text: str, origin: str = "debian.sources") -> list[AptSource]:
    """deb822 stanzas (``Types: deb``, ``URIs:``, ``Suites:``); ``Enabled: no`` is skipped.
    Continuation lines (starting with a space) extend the field before them."""
    out: list[AptSource] = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key is not None:
                fields[key] += " " + line.strip()
                continue
            key, sep, value = line.partition(":")
            key = key.strip().lower() if sep else None
            if key is not None:
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        uris, suites = tuple(fields.get("uris", "").split()), tuple(fields.get("suites", "").split())
        if uris and suites:
            out.append(AptSource(uris, suites, origin))
    return out


def read_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    """apt's sources in apt's order: sources.list, then sources.list.d/*.list and *.sources."""
    out: list[AptSource] = []
    main = apt_dir / "sources.list"
    files = [main] if main.is_file() else []
    folder = apt_dir / "sources.list.d"
    if folder.is_dir():
        files += sorted(p for p in folder.iterdir() if p.suffix in (".list", ".sources") and p.is_file())
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        parse = parse_deb822 if path.suffix == ".sources" else parse_one_line
        out += parse(text, str(path))
    return out


def debian_mirror(release: str, sources: Iterable[AptSource], releases: Iterable[str]) -> str | None:
    """The first mirror that lists ``release``, else the first that lists any Debian release
    (``-security`` and ``-updates`` suites do not count: they are other archives)."""
    known = set(releases)
    first_any: str | None = None
    for source in sources:
        uri = next((u.rstrip("/") for u in source.uris if _URI.fullmatch(u)), None)
        if uri is None:
            continue
        if release in source.suites:
            return uri
        if first_any is None and known.intersection(source.suites):
            first_any = uri
    return first_any


# -- what debootstrap can build -----------------------------------------------------------------


def debian_releases(scripts: Path = SCRIPTS) -> list[str]:
    """Releases this host's debootstrap builds from a Debian mirror: scripts (or links to
    scripts) that verify with Debian's archive keyring."""
    out = []
    try:
        names = sorted(os.listdir(scripts))
    except OSError:
        return []
    for name in names:
        if name in NOT_DEBIAN or not _RELEASE.fullmatch(name):
            continue
        try:
            text = (scripts / name).resolve().read_text(errors="replace")
        except OSError:
            continue
        if re.search(rf"^keyring {re.escape(DEBIAN_KEYRING)}$", text, re.M):
            out.append(name)
    return out


def parse_target(text: str, scripts: Path = SCRIPTS) -> Target:
    """``debian:RELEASE`` (``debian`` alone is ``stable``), checked against what debootstrap
    on this host can build; anything else is an error that names what it can."""
    distro, _, release = text.partition(":")
    release = release or "stable"
    releases = debian_releases(scripts)
    if distro != "debian" or release not in releases:
        can = ", ".join(f"debian:{r}" for r in releases) or "nothing (install debootstrap)"
        raise InvalidValue("image", text, f"debootstrap on this host can build {can}")
    return Target(distro, release, images.distro_arch(images.host_architecture()))


# -- the build ----------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE)


def build(target: Target, *, no_cache: bool = False, progress: Callable[[str], None] = lambda _: None,
          apt_dir: Path = APT_DIR) -> Built:
    """The cached rootfs tarball of ``target``, built first when missing (or ``no_cache``)."""
    cache = cache_dir()
    tarball = cache / target.cache_name
    started = time.monotonic()
    if not no_cache and _cached(tarball):
        return Built(tarball, target, True, 0.0, None)
    if os.geteuid() != 0:
        raise EngineUnavailable("debootstrap", "only root can build a root filesystem",
                                "run it as root (sudo cman image bootstrap ...)")
    if shutil.which("debootstrap") is None:
        raise EngineUnavailable("debootstrap", "debootstrap is not installed", "apt-get install debootstrap")
    mirror = debian_mirror(target.release, read_sources(apt_dir), debian_releases())
    if mirror is None:
        raise EngineUnavailable("debootstrap", f"no Debian mirror is configured in {apt_dir}/sources.list(.d)",
                                "add your site's Debian mirror to apt's sources")
    cache.mkdir(parents=True, exist_ok=True)
    with _files.locked(cache / ".lock", timeout=BUILD_TIMEOUT):
        clean_stale(cache)
        if not no_cache and _cached(tarball):  # another cman built it while this one waited
            return Built(tarball, target, True, time.monotonic() - started, None)
        work = cache / f".build-{_proc.mark().replace(':', '-')}"
        try:
            rootfs = work / "rootfs"
            rootfs.mkdir(parents=True)
            progress(f"debootstrap {target.release} from {mirror}")
            _debootstrap(["debootstrap", "--variant=minbase", f"--include={','.join((*INCLUDE, *target.packages))}",
                          target.release, str(rootfs), mirror], progress)
            progress("packing the rootfs")
            packed = work / "rootfs.tar.gz"
            members = sorted(os.listdir(rootfs))
            _proc.run(["tar", "-C", str(rootfs), "--numeric-owner", "--one-file-system", "-czf", str(packed),
                       "--", *members], timeout=BUILD_TIMEOUT, backend="debootstrap")
            os.replace(packed, tarball)
        finally:
            remove_workdir(work)
    return Built(tarball, target, False, time.monotonic() - started, mirror)


def _cached(tarball: Path) -> bool:
    """Is the tarball there? A cache this user cannot read counts as missing (then: not root)."""
    try:
        return tarball.is_file()
    except OSError:
        return False


def _debootstrap(argv: list[str], progress: Callable[[str], None]) -> None:
    """Run debootstrap, passing each stage (the first word of its ``I:`` lines) and every warning
    on to ``progress``, the first line of each stage only; killed (its process group) after BUILD_TIMEOUT."""
    child = _proc.spawn(argv, backend="debootstrap", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, start_new_session=True,
                        env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"})
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        _kill_group(child.pid)

    timer = threading.Timer(BUILD_TIMEOUT, expire)
    timer.start()
    tail: list[str] = []
    seen: set[str] = set()
    try:
        assert child.stdout is not None
        for raw in child.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail = [*tail[-19:], line]
            m = STAGE.match(line)
            if m and m.group(1) not in seen:  # per package lines: only the first of each stage
                seen.add(m.group(1))
                progress(line)
            elif line.startswith(("W:", "E:")):
                progress(line)
        code = child.wait()
    except BaseException:
        _kill_group(child.pid)
        child.wait()
        raise
    finally:
        timer.cancel()
    if code != 0:
        if expired:
            raise EngineTimeout(f"debootstrap did not finish within {BUILD_TIMEOUT:g} s")
        last = next((t for t in reversed(tail) if t.startswith("E:")), tail[-1] if tail else "")
        raise EngineError(f"debootstrap exited {code}: {last}")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (debootstrap mounts /proc and /sys in its target), deepest first."""
    prefix = str(path.resolve())
    found = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                point = line.split()[4].encode().decode("unicode_escape")
                if point == prefix or point.startswith(prefix + "/"):
                    found.append(point)
    except OSError:
        return []
    return sorted(found, key=len, reverse=True)


def remove_workdir(work: Path) -> None:
    """Unmount what is mounted inside ``work``, then remove it (never across a mount)."""
    if not work.exists():
        return
    for point in mounts_under(work):
        _proc.run(["umount", "-l", point], check=False, timeout=60, backend="debootstrap")
    if mounts_under(work):
        raise EngineError(f"cannot unmount what is mounted below {work}; remove it by hand")
    shutil.rmtree(work, ignore_errors=True)


def clean_stale(cache: Path) -> list[Path]:
    """Remove the work folders of builds whose process is gone (called under the cache's lock)."""
    removed = []
    for entry in sorted(cache.glob(".build-*")):
        pid, _, start = entry.name.removeprefix(".build-").partition("-")
        if _proc.mark_alive(f"{pid}:{start}") is False:
            remove_workdir(entry)
            removed.append(entry)
    return removed
