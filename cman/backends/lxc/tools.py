"""The ``lxc-*`` tools, and where a container's files live.

Every tool runs through :mod:`cman._sys.proc` (argv lists, a timeout on each call, errors
that keep argv, exit code and stderr), with ``-P LXCPATH`` from ``$CMAN_LXC_PATH`` (default
/var/lib/lxc). State is always read back with ``lxc-info``/``lxc-ls``, never guessed from
a tool's stderr. Only the dashed raw tools are used: Debian's ``lxc`` (no dash) is LXD's client.

**Files.** A container is ``LXCPATH/NAME/`` holding ``config`` (written by cman from the
container's settings, see :mod:`.config`), ``rootfs/`` (the container's own files: the upper
layer of its overlay over the image's rootfs, beside overlayfs's ``work/``, or a whole copy
of the image's rootfs where no overlay can be used, see :mod:`.rootfs`),
``cman.json`` (the mark of a managed container: image, command, env, labels, limits,
network, id map, created; mode 0600, as the environment may hold secrets),
``cman.state.json`` (runs: started, finished), ``console.log`` (init's console, via
``lxc.console.logfile``), ``lxc.log`` (LXC's own errors), and while create runs
``.cman-creating`` (whose create it is: :func:`cman._sys.proc.mark`). A job's output and exit
code live in the rootfs (:mod:`cman.jobs`). For an unprivileged container the folder is
``root:MAPPED_GID`` mode 0710 and the rootfs belongs to the mapped ids (:mod:`.idmap`).
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..._sys import proc as _proc
from ...errors import InvalidValue
from ...validate import check_config_value
from .store import DEFAULT_STORE

ENV_LXC_PATH = "CMAN_LXC_PATH"
ENV_IMAGES = "CMAN_LXC_IMAGES"
DEFAULT_LXC_PATH = "/var/lib/lxc"
NEW_DIR_PREFIX = ".cman-new-"
"""A container folder being made: ``.cman-new-PID-STARTTIME-RANDOM``, renamed to the
container's name once it holds its creator's mark (:func:`cman._sys.proc.mark`)."""

RUNNING = frozenset({"RUNNING", "STARTING", "STOPPING", "FREEZING", "FROZEN", "THAWED"})
"""``lxc-info`` states in which the container's init is alive."""


def check_lxc_value(key: str, value: str) -> str:
    """A value LXC reads back exactly as written, on its one line.

    On top of :func:`~cman.validate.check_config_value` (no newline, no NUL, no leading
    '-'): LXC trims blanks around a value (so ``" -x"`` would read as ``-x``, and ``" x"``
    as ``x``); cman's own reader, like Python, would break a line at other separators
    (``\x1c``, ``\x85``, U+2028, ...); and the file is UTF-8, which a lone surrogate is not.
    """
    check_config_value(key, value)
    if value != value.strip(" \t"):
        raise InvalidValue(key, value, "must not start or end with blanks (LXC trims them)")
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") and c != "\t" for c in value):
        raise InvalidValue(key, value, "must not contain control characters or line separators")
    return value


def lxc_path_from_env() -> str:
    """$CMAN_LXC_PATH (default /var/lib/lxc), checked: it goes into every config."""
    value = os.environ.get(ENV_LXC_PATH) or DEFAULT_LXC_PATH
    check_lxc_value(ENV_LXC_PATH, value)
    if not os.path.isabs(value):
        raise InvalidValue(ENV_LXC_PATH, value, "must be an absolute path")
    return os.path.normpath(value)


def image_store_from_env() -> Path:
    value = os.environ.get(ENV_IMAGES) or str(DEFAULT_STORE)
    check_lxc_value(ENV_IMAGES, value)
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
        elif key == "pid":
            pid = _pid(value)
    return state, pid


def _pid(text: str) -> int | None:
    """A process ID as the lxc tools print one: ASCII digits (``str.isdigit`` also takes '²'),
    and above 0 (a stopped container prints none; 0 is no process)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    value = int(text)
    return value if value > 0 else None


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
    def creating(self) -> Path:
        """``PID:STARTTIME`` of the cman process creating the container; gone once it is made."""
        return self.dir / ".cman-creating"

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


def first_error(paths: Paths, offset: int) -> str:
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


def config_values(config: Path, keys: frozenset[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """The ``key = value`` lines of an LXC config whose key is one of ``keys``, in order;
    [] when the file cannot be read. Read as LXC reads it (parse.c, string_utils.c): lines
    end at "\\n" only, blanks are trimmed around the key and the value (and newlines and
    NULs at the value's end)."""
    try:
        text = config.read_bytes().decode("utf-8", "surrogateescape")
    except OSError:
        return []
    out: list[tuple[str, str]] = []
    for line in text.split("\n"):
        body = line.lstrip(" \t")
        if not body or body.startswith("#"):
            continue
        key, sep, value = body.partition("=")
        key, value = key.strip(" \t"), value.lstrip(" \t").rstrip(" \t\n\0")
        if sep and key in keys:
            out.append((key, value))
    return out


def is_ephemeral(config: Path) -> bool:
    """Does LXC destroy this container when it stops (``lxc.ephemeral = 1``, cman's ``--rm``)?"""
    return any(v == "1" for _k, v in config_values(config, ("lxc.ephemeral",)))
