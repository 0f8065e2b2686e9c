"""Docker daemon settings in daemon.json: validate, merge, write atomically, restart dockerd.

``cman engine configure docker`` manages five keys of ``/etc/docker/daemon.json``
(``bridge``, ``bip``, ``dns``, ``icc``, ``registry-mirrors``) and keeps every other
key as it is. Everything is validated before the file is touched; the file is
replaced atomically (temporary file, fsync, rename, fsync of the folder), so a
crash leaves either the old or the new file, never half of one.

With ``--apply`` the daemon is restarted so it reads the file: ``systemctl restart
docker`` under systemd; without systemd (these machines), dockerd is found by its
pid file, stopped with SIGTERM, and started again with the same argv, environment,
working directory and log file it had (which is how scripts/setup-engines.sh
started it), detached in its own session. cman then waits until ``docker info``
answers. If the daemon does not come back, the previous file is restored and the
daemon started again, so a bad setting never leaves the host without Docker.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import EngineError, EngineUnavailable, InvalidValue, UsageError

DEFAULT_PATH = Path("/etc/docker/daemon.json")
DEFAULT_PIDFILE = Path("/var/run/docker.pid")
FALLBACK_LOG = Path("/var/log/cman-dockerd.log")
SETUP_PIDFILE = Path("/run/cman-dockerd.pid")
"""Written by scripts/setup-engines.sh; kept pointing at the running dockerd."""

KEYS = ("bridge", "bip", "dns", "icc", "registry-mirrors")
"""The daemon.json keys cman manages; every other key is kept as it is."""
FLAGS: Mapping[str, tuple[str, ...]] = {
    "bridge": ("-b", "--bridge"),
    "bip": ("--bip",),
    "dns": ("--dns",),
    "icc": ("--icc",),
    "registry-mirrors": ("--registry-mirror",),
}
"""dockerd refuses to start when a key is set both in daemon.json and as a flag."""

Notify = Callable[[str], None]


# -- what to change -------------------------------------------------------------------------------


def check_bip(text: str) -> str:
    """``bip`` is the bridge's own address with a prefix (172.18.0.1/16), not a network."""
    import ipaddress

    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidValue("--bip", text, "use ADDRESS/PREFIX, the bridge's own address, e.g. 172.18.0.1/16") from None
    if iface.version != 4 or "/" not in text:
        raise InvalidValue("--bip", text, "use an IPv4 ADDRESS/PREFIX such as 172.18.0.1/16")
    net = iface.network
    if not 8 <= net.prefixlen <= 30:
        raise InvalidValue("--bip", text, "the prefix must be between /8 and /30")
    if iface.ip in (net.network_address, net.broadcast_address):
        raise InvalidValue("--bip", text, f"is the network or broadcast address of {net}; use a host address such as "
                                          f"{next(net.hosts())}/{net.prefixlen}")
    if net.is_loopback or net.is_link_local or net.is_multicast or net.is_reserved:
        raise InvalidValue("--bip", text, "is not a usable private range")
    return str(iface)


def check_mirror(text: str) -> str:
    """dockerd's own rules for a registry mirror: http(s)://host[:port][/], nothing else."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise InvalidValue("--registry-mirror", text, str(err)) from None
    del port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValue("--registry-mirror", text, "use http://HOST[:PORT] or https://HOST[:PORT]")
    if parts.username or parts.password:
        raise InvalidValue("--registry-mirror", text, "credentials do not belong in the URL (use docker login)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidValue("--registry-mirror", text, "dockerd accepts no path, query or fragment in a mirror URL")
    return text.rstrip("/") + "/"


@dataclass(frozen=True)
class DaemonSettings:
    """What to set; None leaves a key as it is. Valid by construction (UsageError naming the option)."""

    bridge: str | None = None
    bip: str | None = None
    dns: tuple[str, ...] | None = None
    icc: bool | None = None
    registry_mirrors: tuple[str, ...] | None = None
    unset: tuple[str, ...] = ()
    """Managed keys to remove from the file (back to dockerd's default)."""

    def __post_init__(self) -> None:
        from .network import check_dns_servers, check_ifname

        if self.bridge is not None and self.bridge != "none":
            check_ifname(self.bridge, "--bridge")
        if self.bip is not None:
            object.__setattr__(self, "bip", check_bip(self.bip))
        if self.bridge is not None and self.bip is not None:
            raise InvalidValue("--bip", self.bip, "dockerd does not accept --bridge and --bip together")
        if self.dns is not None:
            object.__setattr__(self, "dns", check_dns_servers(self.dns))
        if self.registry_mirrors is not None:
            mirrors = tuple(check_mirror(m) for m in self.registry_mirrors)
            if len(set(mirrors)) != len(mirrors):
                raise InvalidValue("--registry-mirror", " ".join(mirrors), "a mirror is given twice")
            object.__setattr__(self, "registry_mirrors", mirrors)
        for key in self.unset:
            if key not in KEYS:
                raise InvalidValue("--unset", key, f"cman manages only {', '.join(KEYS)}")
            if self.values().get(key) is not None:
                raise InvalidValue("--unset", key, "is also being set")

    def values(self) -> dict[str, Any]:
        """daemon.json key -> new value, for the keys being set."""
        out: dict[str, Any] = {
            "bridge": self.bridge,
            "bip": self.bip,
            "dns": list(self.dns) if self.dns is not None else None,
            "icc": self.icc,
            "registry-mirrors": list(self.registry_mirrors) if self.registry_mirrors is not None else None,
        }
        return {k: v for k, v in out.items() if v is not None}


# -- the file -------------------------------------------------------------------------------------


def read_config(path: Path) -> tuple[str | None, dict[str, Any]]:
    """The file's text (None when absent) and its JSON object."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, {}
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from err
    if not text.strip():
        return text, {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON (line {err.lineno}: {err.msg})",
                         hint="fix it by hand first: cman keeps keys it does not manage and will not guess") from err
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object")
    return text, data


def merge(current: Mapping[str, Any], settings: DaemonSettings) -> dict[str, Any]:
    """``current`` with the settings applied; other keys and their order kept, new keys at the end."""
    out = {k: v for k, v in current.items() if k not in settings.unset}
    out.update(settings.values())
    if "bridge" in out and "bip" in out:
        kept = "bip" if "bridge" in settings.values() else "bridge"
        raise InvalidValue(
            f"--{'bridge' if kept == 'bip' else 'bip'}", out["bridge" if kept == "bip" else "bip"],
            f"the file already sets {kept!r} and dockerd does not accept bridge and bip together: add --unset {kept}",
        )
    return out


def render(config: Mapping[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"


def unified_diff(old: str | None, new: str, path: Path) -> str:
    return "".join(difflib.unified_diff(
        (old or "").splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"{path} (before)" if old is not None else "/dev/null", tofile=str(path),
    ))


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: temporary file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    tmp = path.with_name(f".{path.name}.cman-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def restore(path: Path, text: str | None) -> None:
    """Put back what :func:`read_config` read (remove the file when there was none)."""
    if text is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        write_atomic(path, text)


def check_bip_free(bip: str, *, own_bridge: str = "docker0") -> None:
    """The range of ``bip`` must not overlap a route or address of the host (docker0's own excepted)."""
    import ipaddress

    from .network import read_host

    net = ipaddress.IPv4Interface(bip).network
    hits = [r for r in read_host().overlaps(net) if r.dev != own_bridge]
    if hits:
        where = f"{hits[0].source} {hits[0].net}" + (f" on {hits[0].dev}" if hits[0].dev else "")
        raise InvalidValue("--bip", bip, f"overlaps the host's {where}")


@dataclass(frozen=True)
class Plan:
    path: Path
    old_text: str | None
    new_text: str
    config: dict[str, Any]

    @property
    def changed(self) -> bool:
        if self.old_text is None:
            return bool(self.config)
        return self.old_text != self.new_text

    @property
    def diff(self) -> str:
        return unified_diff(self.old_text, self.new_text, self.path) if self.changed else ""


def plan(path: Path, settings: DaemonSettings) -> Plan:
    """Read, merge, render; nothing written. A file whose keys already hold the values is unchanged."""
    old_text, current = read_config(path)
    merged = merge(current, settings)
    if merged == current and old_text is not None:
        return Plan(path, old_text, old_text, merged)
    return Plan(path, old_text, render(merged), merged)


# -- the daemon -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonProcess:
    """A running dockerd and what it takes to start it again the same way."""

    pid: int
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    cwd: str
    log: Path | None
    """The regular file its stderr goes to, if any."""
    started: float
    """Start time, seconds since the epoch."""

    def config_file(self) -> Path:
        """The daemon.json it reads (``--config-file``, default /etc/docker/daemon.json)."""
        args = list(self.argv)
        for i, arg in enumerate(args):
            if arg == "--config-file" and i + 1 < len(args):
                return Path(args[i + 1])
            if arg.startswith("--config-file="):
                return Path(arg.split("=", 1)[1])
        return DEFAULT_PATH

    def flag_conflicts(self, keys: Sequence[str]) -> list[str]:
        """Keys of ``keys`` that this dockerd also gets as a command-line flag."""
        out = []
        for key in keys:
            for flag in FLAGS.get(key, ()):
                if any(a == flag or a.startswith(flag + "=") for a in self.argv[1:]):
                    out.append(key)
                    break
        return out


def _boot_time(proc: Path) -> float:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def read_process(pid: int, proc: Path = Path("/proc")) -> DaemonProcess | None:
    """What /proc says about ``pid``: argv, environment, cwd, log file, start time (None if gone)."""
    base = proc / str(pid)
    try:
        argv = tuple(a for a in (base / "cmdline").read_bytes().decode(errors="replace").split("\0") if a)
        env_items = (base / "environ").read_bytes().decode(errors="replace").split("\0")
        stat = (base / "stat").read_text()
        cwd = os.readlink(base / "cwd")
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # exited, not reaped yet
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    started = _boot_time(proc) + int(fields[19]) / ticks
    env = dict(item.split("=", 1) for item in env_items if "=" in item)
    log: Path | None = None
    with contextlib.suppress(OSError):
        target = os.readlink(base / "fd" / "2")
        if target.startswith("/") and not target.endswith(" (deleted)") and Path(target).is_file():
            log = Path(target)
    return DaemonProcess(pid, argv, env, cwd, log, started)


def _comm(pid: int, proc: Path) -> str | None:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return None


def find_dockerd(proc: Path = Path("/proc"), pidfile: Path = DEFAULT_PIDFILE) -> DaemonProcess | None:
    """The running dockerd: its pid file first, else the only process called dockerd."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if _comm(pid, proc) == "dockerd" and (found := read_process(pid, proc)):
            return found
    pids = [int(p.name) for p in proc.iterdir() if p.name.isdigit() and _comm(int(p.name), proc) == "dockerd"]
    alive = [d for p in pids if (d := read_process(p, proc)) is not None]
    if len(alive) > 1:
        raise EngineError(f"several dockerd processes run ({', '.join(str(d.pid) for d in alive)})",
                          hint="restart the right one by hand")
    return alive[0] if alive else None


def systemd_running() -> bool:
    """sd_booted(): systemd is PID 1 (a systemctl binary alone proves nothing)."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def docker_answers(timeout: float = 10) -> bool:
    """Does ``docker info`` work (the daemon is up and serving)? Falls back to the socket when the CLI is absent."""
    from ._sys import proc as _proc

    if shutil.which("docker") is None:
        from .backends.docker import DockerBackend

        return DockerBackend.probe().reachable
    try:
        return _proc.run(["docker", "info", "--format", "{{.ID}}"], timeout=timeout, check=False,
                         backend="docker").returncode == 0
    except (EngineError, EngineUnavailable):
        return False


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _stop(daemon: DaemonProcess, timeout: float, proc: Path) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon.pid, signal.SIGTERM)
    if not wait_for(lambda: read_process(daemon.pid, proc) is None, timeout):
        raise EngineError(f"dockerd (pid {daemon.pid}) did not exit within {timeout:g} s of SIGTERM",
                          hint="see its log; cman does not SIGKILL the daemon")


def _start_like(daemon: DaemonProcess) -> int:
    """Start dockerd again with the old one's argv, environment, cwd and log, in its own session."""
    from ._sys import proc as _proc

    log_path = daemon.log or FALLBACK_LOG
    with open(log_path, "ab") as log:
        child = _proc.spawn(list(daemon.argv), backend="docker", env=dict(daemon.env), cwd=daemon.cwd or "/",
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                            close_fds=True)
    with contextlib.suppress(OSError):
        if SETUP_PIDFILE.exists() and SETUP_PIDFILE.read_text().strip() == str(daemon.pid):
            SETUP_PIDFILE.write_text(f"{child.pid}\n")
    return child.pid


def _log_tail(path: Path | None, lines: int = 5) -> str:
    if path is None:
        return ""
    with contextlib.suppress(OSError):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        return " | ".join(line.strip() for line in tail if line.strip())
    return ""


def restart_dockerd(*, timeout: float = 90, notify: Notify = lambda _m: None, proc: Path = Path("/proc"),
                    on_failure: Callable[[], None] | None = None) -> DaemonProcess | None:
    """Restart the local dockerd and wait until ``docker info`` answers; the new process (None under systemd).

    ``on_failure`` runs when the daemon does not come back (restore the old file);
    the daemon is then started once more and EngineError raised.
    """
    from ._sys import proc as _proc

    if systemd_running():
        notify("systemctl restart docker")
        try:
            _proc.run(["systemctl", "restart", "docker"], timeout=timeout, backend="docker")
        except EngineError:
            if on_failure is not None:
                on_failure()
                _proc.run(["systemctl", "restart", "docker"], timeout=timeout, backend="docker", check=False)
            raise
        if not wait_for(docker_answers, timeout):
            raise EngineError(f"docker did not answer `docker info` within {timeout:g} s of the restart")
        return None
    old = find_dockerd(proc)
    if old is None:
        raise EngineUnavailable("docker", "no dockerd process runs on this host", "start it: dockerd > /var/log/dockerd.log 2>&1 &")
    notify(f"stopping dockerd (pid {old.pid})")
    _stop(old, timeout, proc)
    notify(f"starting dockerd: {' '.join(old.argv)} >> {old.log or FALLBACK_LOG}")
    new_pid = _start_like(old)
    if wait_for(docker_answers, timeout):
        new = read_process(new_pid, proc)
        if new is None:  # it answered, yet the process we started is gone: someone else's dockerd?
            raise EngineError(f"dockerd (pid {new_pid}) exited although docker answers")
        notify(f"dockerd is back (pid {new_pid}); docker info answers")
        return new
    problem = _log_tail(old.log or FALLBACK_LOG)
    if (stuck := read_process(new_pid, proc)) is not None:
        _stop(stuck, timeout, proc)
    if on_failure is None:
        raise EngineError(f"dockerd did not come back within {timeout:g} s" + (f": {problem}" if problem else ""))
    on_failure()
    again = _start_like(old)
    back = wait_for(docker_answers, timeout)
    after = (f"the previous configuration was restored and dockerd runs again (pid {again})" if back
             else "the previous configuration was restored but dockerd did not come back either")
    raise EngineError(
        "dockerd did not start with the new configuration" + (f" ({problem})" if problem else "") + f"; {after}",
        hint=f"see {old.log or FALLBACK_LOG}",
    )


def _running_containers() -> int:
    from .backends.docker import DockerBackend
    from .errors import CmanError

    backend = DockerBackend()
    try:
        return len(backend.containers())
    except CmanError:
        return 0
    finally:
        backend.close()


def needs_restart(path: Path, daemon: DaemonProcess | None) -> bool:
    """Was the file changed after the daemon started (a write without --apply, or by hand)?"""
    if daemon is None:
        return False
    try:
        return path.stat().st_mtime > daemon.started
    except FileNotFoundError:
        return False


@dataclass
class Outcome:
    plan: Plan
    written: bool = False
    restarted: bool = False
    daemon: DaemonProcess | None = None
    notes: list[str] = field(default_factory=list)


def configure(path: Path, settings: DaemonSettings, *, apply: bool = False, notify: Notify = lambda _m: None,
              timeout: float = 90) -> Outcome:
    """Validate, write when something changes, and with ``apply`` restart the local dockerd."""
    p = plan(path, settings)
    if settings.bip is not None:
        check_bip_free(settings.bip)
    daemon = None
    if apply:
        from .backends import _reach

        if _reach.docker_socket() is None:
            raise UsageError("--apply restarts the local dockerd, but DOCKER_HOST points to a remote daemon",
                             hint="run it on the daemon's host, or unset DOCKER_HOST")
        if os.geteuid() != 0:
            raise UsageError("--apply needs root: it restarts dockerd")
        daemon = None if systemd_running() else find_dockerd()
        if daemon is not None:
            reads = daemon.config_file()
            if reads.resolve() != path.resolve():
                raise UsageError(f"dockerd (pid {daemon.pid}) reads {reads}, not {path}",
                                 hint=f"pass --config {reads}, or leave out --apply")
            clash = daemon.flag_conflicts(list(p.config))
            if clash:
                raise UsageError(
                    f"dockerd (pid {daemon.pid}) also gets {', '.join(clash)} as command-line flags, and refuses "
                    "to start when a setting is both a flag and in daemon.json",
                    hint="drop the flags from its command line, or leave those keys out",
                )
        bridge = p.config.get("bridge")
        if isinstance(bridge, str) and bridge != "none" and not Path("/sys/class/net", bridge).is_dir():
            raise InvalidValue("--bridge", bridge, "no such interface on this host: dockerd would not start")
    out = Outcome(p)
    if p.changed:
        write_atomic(path, p.new_text)
        out.written = True
    if not apply:
        return out
    if daemon is None and not systemd_running():
        out.notes.append("dockerd is not running: the configuration applies when it starts")
        return out
    if not p.changed and not needs_restart(path, daemon):
        out.notes.append("dockerd already runs with this configuration: not restarted")
        out.daemon = daemon
        return out
    if not p.config.get("live-restore") and (running := _running_containers()):
        notify(f"warning: the restart stops {running} running container(s) (live-restore is off)")
    out.daemon = restart_dockerd(timeout=timeout, notify=notify, on_failure=lambda: restore(path, p.old_text))
    out.restarted = True
    return out
