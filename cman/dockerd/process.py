"""The local dockerd: find it, restart it the way it was started, and ``configure`` (the verb).

With ``--apply`` the daemon is restarted so it reads daemon.json: ``systemctl restart
docker`` under systemd; without systemd, dockerd is found by a pidfile (its own, or
one a wrapper that started it keeps: :func:`pidfiles`) or by name, stopped with
SIGTERM, and started again with the same argv, environment, working directory and
log file it had, detached in its own session. cman then waits until ``docker info``
answers. If the daemon does not come back, the previous file is restored and the
daemon started again, so a bad setting never leaves the host without Docker.

Docker itself is reached only through the backend registry and the contract.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CmanError, EngineError, EngineUnavailable, InvalidValue, UsageError
from .settings import DEFAULT_PATH, DaemonSettings, Plan, check_bip_free, plan, restore, write_config

if TYPE_CHECKING:
    from ..backends.base import Locality

DEFAULT_PIDFILE = Path("/var/run/docker.pid")
"""dockerd's own pidfile (its ``--pidfile`` default)."""
ENV_PIDFILE = "CMAN_DOCKERD_PIDFILE"
"""Colon-separated pidfiles that whatever started dockerd without systemd keeps (a wrapper
script, a supervisor); cman keeps them pointing at the dockerd it restarts."""
FALLBACK_LOG = Path("/var/log/cman-dockerd.log")
"""Where a restarted dockerd logs when the old one's stderr was not a file."""

FLAGS: Mapping[str, tuple[str, ...]] = {
    "bridge": ("-b", "--bridge"),
    "bip": ("--bip",),
    "dns": ("--dns",),
    "icc": ("--icc",),
    "registry-mirrors": ("--registry-mirror",),
}
"""dockerd refuses to start when a key is set both in daemon.json and as a flag."""

Notify = Callable[[str], None]


def wrapper_pidfiles() -> tuple[Path, ...]:
    """Pidfiles kept by whatever started dockerd (:data:`ENV_PIDFILE`)."""
    return tuple(Path(p) for p in os.environ.get(ENV_PIDFILE, "").split(":") if p)


def pidfiles() -> tuple[Path, ...]:
    """Pidfiles that may name the running dockerd: its own first, then the wrappers'."""
    return (DEFAULT_PIDFILE, *wrapper_pidfiles())


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
    """When the machine booted, to 10 ms: now minus ``/proc/uptime``. ``btime`` in /proc/stat is
    whole seconds (and drifts from the wall clock in VMs), enough to misjudge a daemon started
    within a second of a file write as older than it (a restart for nothing)."""
    try:
        return time.time() - float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
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
        if not os.path.isdir(cwd):  # "/old/checkout (deleted)": start the new one from "/"
            cwd = "/"
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


def find_dockerd(proc: Path = Path("/proc"), pidfile: Path | None = None) -> DaemonProcess | None:
    """The running dockerd: by ``pidfile`` (default: :func:`pidfiles`) first, else the only process called dockerd."""
    for path in (pidfile,) if pidfile is not None else pidfiles():
        with contextlib.suppress(OSError, ValueError):
            pid = int(path.read_text().strip())
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
    from .._sys import proc as _proc

    if shutil.which("docker") is None:
        from .. import backends

        return backends.backend_class("docker").probe().reachable
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


def start_like(daemon: DaemonProcess) -> int:
    """Start dockerd again with the old one's argv, environment, cwd and log, in its own session."""
    from .._sys import proc as _proc

    log_path = daemon.log or FALLBACK_LOG
    with open(log_path, "ab") as log:
        child = _proc.spawn(list(daemon.argv), backend="docker", env=dict(daemon.env), cwd=daemon.cwd or "/",
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                            close_fds=True)
    for pidfile in wrapper_pidfiles():  # dockerd writes its own; a wrapper's would go stale
        with contextlib.suppress(OSError):
            if pidfile.exists() and pidfile.read_text().strip() == str(daemon.pid):
                pidfile.write_text(f"{child.pid}\n")
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
    from .._sys import proc as _proc

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
    new_pid = start_like(old)
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
    again = start_like(old)
    back = wait_for(docker_answers, timeout)
    after = (f"the previous configuration was restored and dockerd runs again (pid {again})" if back
             else "the previous configuration was restored but dockerd did not come back either")
    raise EngineError(
        "dockerd did not start with the new configuration" + (f" ({problem})" if problem else "") + f"; {after}",
        hint=f"see {old.log or FALLBACK_LOG}",
    )


def _running_containers() -> int:
    from .. import backends

    try:
        docker = backends.load("docker")
    except CmanError:
        return 0
    try:
        return len(docker.containers())
    except CmanError:
        return 0
    finally:
        docker.close()


def _docker_locality() -> Locality:
    """Where the configured Docker daemon is (DOCKER_HOST), asked of the backend without connecting."""
    from .. import backends

    docker = backends.load("docker")
    try:
        return docker.locality()
    finally:
        docker.close()


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
        where = _docker_locality()
        if not where.local:
            raise UsageError(f"--apply restarts the local dockerd, but the Docker daemon is not on this host "
                             f"({where.why or where.endpoint})", hint="run it on the daemon's host, or unset DOCKER_HOST")
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
        write_config(path, p.new_text)
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

