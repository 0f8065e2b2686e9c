"""What a monitor is configured with, where its files are, and the errors it reports.

Defaults (all overridable):

- metrics on ``http://127.0.0.1:9464/metrics`` (loopback only unless ``--listen``
  says otherwise);
- pidfile ``$CMAN_MONITOR_PIDFILE``, else ``$CMAN_RUN_DIR/monitor.pid``, where the run
  directory is ``/run/cman`` for root and ``$XDG_RUNTIME_DIR/cman`` (else
  ``/tmp/cman-UID``) for other users;
- state file: the pidfile with the suffix ``.json`` (``/run/cman/monitor.json``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from ..errors import CmanError, Conflict, ExitCode, InvalidValue

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
"""The port of the OpenTelemetry Prometheus exporter; free on a host without one."""
DEFAULT_INTERVAL = 1.0
ENV_RUN_DIR = "CMAN_RUN_DIR"
ENV_PIDFILE = "CMAN_MONITOR_PIDFILE"


class MonitorRunning(Conflict):
    """``start`` while a monitor already holds the pidfile (exit 4)."""

    def __init__(self, pid: int | None, pidfile: Path) -> None:
        which = f" (PID {pid})" if pid else ""
        super().__init__(
            f"cman monitor is already running{which}, pidfile {pidfile}",
            hint="use `cman monitor restart`, or another --pidfile",
        )
        self.pid = pid


class MonitorError(CmanError):
    """The monitor could not start or stop (exit 1)."""

    exit_code = ExitCode.ERROR


# -- paths and options ----------------------------------------------------------------------


def run_dir() -> Path:
    """$CMAN_RUN_DIR, else /run/cman for root, else $XDG_RUNTIME_DIR/cman or /tmp/cman-UID."""
    if env := os.environ.get(ENV_RUN_DIR):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/cman")
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "cman"
    import tempfile

    return Path(tempfile.gettempdir()) / f"cman-{os.getuid()}"


def default_pidfile() -> Path:
    if env := os.environ.get(ENV_PIDFILE):
        return Path(env)
    return run_dir() / "monitor.pid"


def check_pidfile(path: Path | None) -> Path | None:
    """A pidfile names a file: not ``/``, not a folder, a name the filesystem takes (``--pidfile``)."""
    if path is None:
        return path
    try:
        is_dir = path.is_dir()  # False for a missing file; OSError for a name too long, a loop
    except OSError as err:
        raise InvalidValue("--pidfile", str(path), f"cannot be used: {err.strerror}") from None
    if not path.name or path.name in (".", "..") or is_dir:
        raise InvalidValue("--pidfile", str(path), "name a file, e.g. /run/cman/monitor.pid")
    return path


def state_file_for(pidfile: Path) -> Path:
    """Where the monitor behind ``pidfile`` publishes its samples."""
    return check_pidfile(pidfile).with_suffix(".json")  # type: ignore[union-attr]


def parse_listen(text: str) -> tuple[str, int]:
    """``IP:PORT``, ``[IPv6]:PORT``, ``localhost:PORT``, ``:PORT`` or ``PORT`` (loopback)."""
    raw = text.strip()
    host, port_text = DEFAULT_HOST, raw
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0 or raw[end + 1 : end + 2] != ":":
            raise InvalidValue("--listen", text, "write [IPv6]:PORT, e.g. [::1]:9464")
        host, port_text = raw[1:end], raw[end + 2 :]
    elif ":" in raw:
        host, _, port_text = raw.rpartition(":")
        host = host or DEFAULT_HOST
        if ":" in host:
            raise InvalidValue("--listen", text, "write an IPv6 address in brackets: [::1]:9464")
    if host == "localhost":
        host = DEFAULT_HOST
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InvalidValue("--listen", text, "use IP:PORT with an IP address, e.g. 127.0.0.1:9464") from None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise InvalidValue("--listen", text, "the port must be a number from 1 to 65535")
    return host, int(port_text)


def format_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(host).is_loopback


class MonitorConfig(NamedTuple):
    interval: float = DEFAULT_INTERVAL
    listen: tuple[str, int] = (DEFAULT_HOST, DEFAULT_PORT)
    pidfile: Path | None = None
    log: Path | None = None
    backend_option: str | None = None

    @property
    def pidfile_path(self) -> Path:
        return (self.pidfile or default_pidfile()).absolute()

    @property
    def state_file(self) -> Path:
        return state_file_for(self.pidfile_path)

    def checked(self) -> MonitorConfig:
        """Validated, with absolute paths (the daemon changes directory to /)."""
        if not self.interval > 0:
            raise InvalidValue("--interval", self.interval, "must be a number of seconds greater than 0")
        return MonitorConfig(
            interval=self.interval,
            listen=self.listen,
            pidfile=self.pidfile_path,
            log=self.log.absolute() if self.log else None,
            backend_option=self.backend_option,
        )
