"""The CPU monitor daemon: samples every container at a fixed interval and serves the
figures as Prometheus metrics and as a JSON file that ``cman stats`` reads.

Defaults and files (all overridable):

- metrics on ``http://127.0.0.1:9464/metrics`` (loopback only unless ``--listen``
  says otherwise); the latest samples also on ``/samples.json`` of the same server;
- pidfile ``$CMAN_MONITOR_PIDFILE``, else ``$CMAN_RUN_DIR/monitor.pid``, where the run
  directory is ``/run/cman`` for root and ``$XDG_RUNTIME_DIR/cman`` (else
  ``/tmp/cman-UID``) for other users;
- state file: the pidfile with the suffix ``.json`` (``/run/cman/monitor.json``),
  replaced atomically after every sample. ``cman stats --no-stream`` answers from it,
  without touching any engine, while the monitor runs and the file is fresh.

The pidfile is locked with ``fcntl`` (a POSIX record lock held for the daemon's
life), so "running" is a fact the kernel keeps, not a guess from a PID that may have
been reused: :func:`lock_holder` asks the kernel who holds it (``F_GETLK``) without
taking the lock itself. ``start`` daemonizes like daemon(3) - fork, setsid, fork
again, chdir /, umask 022, stdio to /dev/null or the log file - and waits for the
daemon to say it is ready (pidfile locked, port bound) or why it failed.

Exit codes (LSB-like): ``start`` 0 started, 4 already running (the message gives the
PID), 1 could not start (e.g. port in use); ``stop`` 0 stopped or not running;
``status`` 0 running, 3 stopped; ``run`` 0 after SIGTERM/SIGINT.

Metrics: ``cman_container_cpu_seconds_total{name,backend,mode="user"|"system"}``
(counter, from the cgroup's cumulative counters), ``cman_container_cpu_percent{name,backend}``
(gauge over the last interval, 100 = one CPU; absent while unknown, never 0), and
``cman_monitor_*`` figures about the monitor itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import CmanError, Conflict, ExitCode, InvalidValue

if TYPE_CHECKING:
    import logging
    import threading

    from .stats import Snapshot

# This module is imported by every `cman stats --no-stream` to look for a running
# monitor, so its top level stays light: no dataclasses (~2 ms each to create), and
# logging, threading, prometheus_client and cman.stats are imported where used.

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
"""The port of the OpenTelemetry Prometheus exporter; free on a host without one."""
DEFAULT_INTERVAL = 1.0
ENV_RUN_DIR = "CMAN_RUN_DIR"
ENV_PIDFILE = "CMAN_MONITOR_PIDFILE"
STATE_FORMAT = 1
STOP_TIMEOUT = 10.0
READY_TIMEOUT = 30.0



def _log() -> logging.Logger:
    import logging

    return logging.getLogger("cman.monitor")


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


def state_file_for(pidfile: Path) -> Path:
    """Where the monitor behind ``pidfile`` publishes its samples."""
    return pidfile.with_suffix(".json")


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
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
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


# -- the pidfile ---------------------------------------------------------------------------

_FLOCK = "hhqqi4x"  # struct flock on Linux 64-bit: type, whence, start, len, pid (+ padding)


def lock_holder(pidfile: Path) -> int | None:
    """PID of the process holding ``pidfile``'s lock, or None when nobody does.

    Asks the kernel (F_GETLK) without taking the lock, so a reader can never make
    a starting daemon fail. Returns -1 when it is locked but the holder's PID is not
    visible (another PID namespace) and the file does not say either.
    Never call this inside the daemon: closing any descriptor of the file would drop
    the daemon's own POSIX lock.
    """
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as err:
        raise MonitorError(f"cannot read the pidfile {pidfile}: permission denied", hint="run as root") from err
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
        if kind == fcntl.F_UNLCK:
            return None
        if pid > 0:
            return int(pid)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)


class PidFile:
    """The daemon's pidfile, locked for its whole life."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock and write our PID; MonitorRunning when another process holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MonitorError(f"cannot create {self.path.parent}: {err.strerror}", hint="choose another --pidfile") from err
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                raise MonitorError(f"cannot open the pidfile {self.path}: {err.strerror}",
                                   hint="choose another --pidfile") from err
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EACCES, errno.EAGAIN):
                    raise MonitorRunning(lock_holder(self.path), self.path) from err
                raise
            # A stopping monitor unlinks its pidfile before it unlocks: if we locked
            # that old inode, start again with the file that is now at the path.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return
        raise MonitorError(f"could not lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        """Remove the file, then unlock (in that order: see :meth:`acquire`)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


# -- the state file --------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename over ``path``."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def snapshot_document(snapshot: Snapshot, config: MonitorConfig, started: float) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "pid": os.getpid(),
        "listen": format_listen(config.listen),
        "interval_s": config.interval,
        "started": started,
        "timestamp": snapshot.timestamp,
        "duration_s": round(snapshot.duration_s, 6),
        "backends": list(snapshot.backends),
        "errors": dict(snapshot.errors),
        "containers": [r.to_dict() for r in snapshot.rows],
    }


class MonitorState(NamedTuple):
    """What a running monitor last published; rows are ``cman stats --json`` objects."""

    pid: int
    listen: str
    interval_s: float
    started: float
    timestamp: float
    backends: tuple[str, ...]
    errors: dict[str, str]
    rows: tuple[dict[str, Any], ...]

    @property
    def age_s(self) -> float:
        return time.time() - self.timestamp

    @property
    def fresh(self) -> bool:
        """Sampled within two intervals (plus a second of slack)."""
        return -1.0 <= self.age_s <= 2 * self.interval_s + 1.0


def read_state(pidfile: Path | None = None) -> MonitorState | None:
    """The running monitor's latest samples, or None (no monitor, not ours, unreadable).

    One file read and one lock query: no engine is contacted.
    """
    pidfile = pidfile or default_pidfile()
    try:
        with open(state_file_for(pidfile), "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None
    try:
        if doc.get("format") != STATE_FORMAT:
            return None
        rows = tuple(doc.get("containers") or ())
        for row in rows:
            row["sampled_by"] = "monitor"
        state = MonitorState(
            pid=int(doc["pid"]),
            listen=str(doc.get("listen", "")),
            interval_s=float(doc["interval_s"]),
            started=float(doc.get("started", 0)),
            timestamp=float(doc["timestamp"]),
            backends=tuple(doc.get("backends") or ()),
            errors=dict(doc.get("errors") or {}),
            rows=rows,
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    try:
        holder = lock_holder(pidfile)
    except MonitorError:
        return None
    if holder is None or (holder > 0 and holder != state.pid):
        return None  # a leftover of a monitor that died without cleaning up
    return state


# -- metrics ----------------------------------------------------------------------------------


class _SnapshotCollector:
    """A prometheus_client collector exporting the latest snapshot as it is.

    The cgroup counters are already cumulative, so they are exported as counter
    samples directly (a Counter object only knows how to inc()).
    """

    def __init__(self, latest: Callable[[], tuple[Snapshot | None, float]]) -> None:
        self._latest = latest

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snapshot, duration = self._latest()
        seconds = CounterMetricFamily(
            "cman_container_cpu_seconds",
            "CPU time used by the container's cgroup since it was created, by mode.",
            labels=["name", "backend", "mode"],
        )
        percent = GaugeMetricFamily(
            "cman_container_cpu_percent",
            "CPU use over the last sampling interval; 100 = one full CPU (as docker stats).",
            labels=["name", "backend"],
        )
        containers = GaugeMetricFamily(
            "cman_monitor_containers", "Containers sampled in the last pass, by backend.", labels=["backend"]
        )
        last = GaugeMetricFamily("cman_monitor_last_sample_timestamp_seconds", "When the last pass ended.")
        took = GaugeMetricFamily("cman_monitor_sample_duration_seconds", "Time the last pass took (listing and reading).")
        if snapshot is not None:
            counts: dict[str, int] = dict.fromkeys(snapshot.backends, 0)
            for row in snapshot.rows:
                if row.pid is None:
                    continue
                counts[row.backend] = counts.get(row.backend, 0) + 1
                if row.cpu_user_ns is not None:
                    seconds.add_metric([row.name, row.backend, "user"], row.cpu_user_ns / 1e9)
                if row.cpu_system_ns is not None:
                    seconds.add_metric([row.name, row.backend, "system"], row.cpu_system_ns / 1e9)
                if row.cpu_percent is not None:
                    percent.add_metric([row.name, row.backend], row.cpu_percent)
            for backend, n in counts.items():
                containers.add_metric([backend], n)
            last.add_metric([], snapshot.timestamp)
            took.add_metric([], duration)
        yield from (seconds, percent, containers, last, took)


def _make_server(listen: tuple[str, int], app: Callable[..., Any]) -> Any:
    import socket
    from socketserver import TCPServer, ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    host, port = listen

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            pass

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def server_bind(self) -> None:
            # HTTPServer.server_bind would call socket.getfqdn(host): a reverse DNS
            # lookup for nothing. Bind, and name the server by its address.
            TCPServer.server_bind(self)
            self.server_name, self.server_port = host, port
            self.setup_environ()

    return make_server(host, port, app, Server, handler_class=Handler)


# -- the daemon ---------------------------------------------------------------------------------


class Monitor:
    """Sample every container each interval; publish to the state file and the HTTP server."""

    def __init__(self, config: MonitorConfig) -> None:
        import threading

        from .stats import Backends, Selection, StatsCollector

        self.config = config
        self.backends = Backends(config.backend_option)
        # Every container, managed or not, running or not: readers filter.
        self.collector = StatsCollector(self.backends, Selection(all=True))
        self.stopping = threading.Event()
        self.started = time.time()
        self._latest: tuple[Snapshot | None, float] = (None, 0.0)
        self._document = b"[]"
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._pidfile = PidFile(config.pidfile_path)
        self._last_errors: dict[str, str] = {}

    # -- set-up --

    def acquire(self) -> None:
        """Lock the pidfile, then bind the port: "already running" is said before "port in use"."""
        self._pidfile.acquire()
        try:
            self._bind()
        except BaseException:
            self._pidfile.release()
            raise

    def _bind(self) -> None:
        from prometheus_client import CollectorRegistry, make_wsgi_app
        from prometheus_client.process_collector import ProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_SnapshotCollector(lambda: self._latest))
        ProcessCollector(registry=registry, namespace="cman_monitor")
        metrics = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            path = environ.get("PATH_INFO", "/")
            if path == "/samples.json":
                body = self._document
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
            if path in ("/", "/metrics"):
                return metrics(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"see /metrics or /samples.json\n"]

        where = format_listen(self.config.listen)
        try:
            self._server = _make_server(self.config.listen, app)
        except OSError as err:
            why = "address already in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
            raise MonitorError(f"cannot listen on {where}: {why}", hint="choose another --listen IP:PORT") from err
        import threading

        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="metrics-http", daemon=True
        )
        self._thread.start()

    def release(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.config.state_file)
        self._pidfile.release()
        self.backends.close()

    # -- the loop --

    def pass_once(self) -> Snapshot:
        snapshot = self.collector.tick()
        doc = snapshot_document(snapshot, self.config, self.started)
        data = json.dumps(doc, separators=(",", ":")).encode()
        self._document = data
        self._latest = (snapshot, snapshot.duration_s)
        write_atomic(self.config.state_file, data)
        if snapshot.errors != self._last_errors:
            for backend, message in snapshot.errors.items():
                if self._last_errors.get(backend) != message:
                    _log().warning("%s skipped: %s", backend, message)
            self._last_errors = dict(snapshot.errors)
        return snapshot

    def loop(self) -> None:
        """Sample every interval until :attr:`stopping` is set (SIGTERM, SIGINT)."""
        interval = self.config.interval
        next_at = time.monotonic()
        failing = ""
        while not self.stopping.is_set():
            try:
                self.pass_once()
                failing = ""
            except Exception as err:  # a daemon keeps going; say it once per new problem
                if str(err) != failing:
                    _log().exception("sampling failed: %s", err)
                    failing = str(err)
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # a pass took longer than the interval: skip, do not pile up
                next_at = now + interval
            self.stopping.wait(next_at - now)

    def install_signals(self) -> None:
        def stop(signum: int, _frame: object) -> None:
            _log().info("received %s, stopping", signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, lambda *_: _reopen_log(self.config.log))

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Foreground: acquire, serve and sample until stopped; always clean up."""
        self.acquire()
        try:
            self.install_signals()
            _log().info(
                "cman monitor %d: sampling every %gs, metrics on http://%s/metrics, state %s",
                os.getpid(), self.config.interval, format_listen(self.config.listen), self.config.state_file,
            )
            if on_ready is not None:
                on_ready()
            self.loop()
        finally:
            self.release()
            _log().info("cman monitor %d stopped", os.getpid())


def _setup_logging() -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s cman-monitor[%(process)d] %(levelname)s %(message)s"))
    root = logging.getLogger("cman")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _reopen_log(path: Path | None) -> None:
    """SIGHUP: reopen the log file (after logrotate moved it)."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def run_foreground(config: MonitorConfig) -> None:
    """``cman monitor run``: stay in the foreground (systemd, containers); log to stderr or --log."""
    config = config.checked()
    if config.log is not None:
        _reopen_log(config.log)
    _setup_logging()
    Monitor(config).run()


def _redirect_stdio(log_path: Path | None) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    out = null
    if log_path is not None:
        try:
            out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            out = null
    os.dup2(out, 1)
    os.dup2(out, 2)
    for fd in {null, out}:
        if fd > 2:
            os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def _report(fd: int, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(message) + "\n").encode())


def start(config: MonitorConfig) -> int:
    """Daemonize a monitor (daemon(3)); return its PID once it is ready.

    Raises MonitorRunning (exit 4) when one already runs, MonitorError when the
    daemon reports a failure (port in use, pidfile not writable) or never gets ready.
    """
    config = config.checked()
    holder = lock_holder(config.pidfile_path)
    if holder is not None:
        raise MonitorRunning(holder if holder > 0 else None, config.pidfile_path)
    if config.log is not None:
        try:
            config.log.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(config.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        except OSError as err:
            raise MonitorError(f"cannot write the log file {config.log}: {err.strerror}", hint="choose another --log") from err
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    first = os.fork()
    if first == 0:  # the intermediate child: new session, fork again, leave
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _daemon_main(config, write_end)
        except BaseException:  # never return into the CLI from a child
            os._exit(1)
        os._exit(0)
    os.close(write_end)
    os.waitpid(first, 0)
    return _wait_ready(read_end, config)


def _wait_ready(fd: int, config: MonitorConfig) -> int:
    import select

    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    try:
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise MonitorError(f"the monitor did not report ready within {READY_TIMEOUT:g}s",
                                   hint=f"see its log ({config.log or 'run `cman monitor run` to see errors'})")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise MonitorError("the monitor exited during start-up",
                                   hint=f"see its log ({config.log or 'run `cman monitor run` to see errors'})")
            buf += chunk
    finally:
        os.close(fd)
    message = json.loads(buf.split(b"\n", 1)[0])
    if "pid" in message:
        return int(message["pid"])
    if message.get("running"):
        raise MonitorRunning(message.get("holder"), config.pidfile_path)
    raise MonitorError(str(message.get("error")), hint=message.get("hint"))


def _daemon_main(config: MonitorConfig, ready_fd: int) -> None:
    """In the grandchild: detach, acquire, report, loop; exit without returning."""
    os.chdir("/")
    os.umask(0o022)
    _redirect_stdio(config.log)
    _setup_logging()
    code = 0
    pipe = [ready_fd]  # emptied once closed: a closed descriptor's number can be reused

    def report(message: dict[str, Any]) -> None:
        if pipe:
            _report(pipe[0], message)
            os.close(pipe.pop())

    try:
        Monitor(config).run(on_ready=lambda: report({"pid": os.getpid()}))
    except MonitorRunning as err:
        report({"running": True, "holder": err.pid})
        code = int(err.exit_code)
    except CmanError as err:
        _log().error("%s", err)
        report({"error": err.message, "hint": err.hint})
        code = int(err.exit_code)
    except BaseException as err:
        _log().exception("the monitor failed")
        report({"error": f"{type(err).__name__}: {err}"})
        code = 1
    finally:
        import logging

        logging.shutdown()
    os._exit(code)


def _alive(pid: int) -> bool:
    """Running (a zombie that its parent has not reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def stop(pidfile: Path | None = None, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM the monitor and wait until it has let go of its pidfile; SIGKILL after ``timeout``.

    Returns the stopped monitor's PID, or None when none was running.
    """
    path = (pidfile or default_pidfile()).absolute()
    pid = lock_holder(path)
    if pid is None:
        return None
    if pid <= 0:
        raise MonitorError(f"the monitor holding {path} runs in another PID namespace", hint="stop it from there")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock_holder(path) != pid and not _alive(pid):
            return pid
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not _alive(pid):
            break
        time.sleep(0.05)
    for leftover in (path, state_file_for(path)):  # it had no chance to clean up
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
    return pid


class Status(NamedTuple):
    running: bool
    pid: int | None
    pidfile: Path
    state: MonitorState | None

    def to_dict(self) -> dict[str, Any]:
        s = self.state
        return {
            "running": self.running,
            "pid": self.pid,
            "pidfile": str(self.pidfile),
            "state_file": str(state_file_for(self.pidfile)),
            "listen": s.listen if s else None,
            "interval_s": s.interval_s if s else None,
            "containers": len(s.rows) if s else None,
            "last_sample_age_s": round(s.age_s, 3) if s else None,
            "backends": list(s.backends) if s else None,
            "errors": s.errors if s else None,
        }


def status(pidfile: Path | None = None) -> Status:
    path = (pidfile or default_pidfile()).absolute()
    pid = lock_holder(path)
    state = read_state(path) if pid is not None else None
    return Status(pid is not None, pid if pid and pid > 0 else None, path, state)
