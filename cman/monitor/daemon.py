"""The daemon: samples every container at a fixed interval and publishes each snapshot
to the samples file and the HTTP server; ``start``, ``stop`` and ``status`` from outside.

``start`` daemonizes like daemon(3) - fork, setsid, fork again, chdir /, umask 022,
stdio to /dev/null or the log file - and waits for the daemon to say it is ready
(pidfile locked, port bound) or why it failed.

Exit codes (LSB-like): ``start`` 0 started, 4 already running (the message gives the
PID), 1 could not start (e.g. port in use); ``stop`` 0 stopped or not running;
``status`` 0 running, 3 stopped; ``run`` 0 after SIGTERM/SIGINT.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .._sys.files import atomic_write
from ..errors import CmanError
from . import metrics
from .config import MonitorConfig, MonitorError, MonitorRunning, default_pidfile, format_listen, state_file_for
from .lister import Lister
from .pidfile import PidFile, lock_holder
from .state import MonitorState, read_state, snapshot_document

if TYPE_CHECKING:
    import logging
    import threading

    from ..stats import Snapshot

STOP_TIMEOUT = 10.0
KILL_WAIT = 5.0
"""Seconds ``stop`` waits for the daemon to vanish after SIGKILL before it gives up."""
READY_TIMEOUT = 30.0
LISTING_TIMEOUT = 60.0
"""Seconds the first pass waits for the first listing (an engine that is starting)."""


def _log() -> logging.Logger:
    import logging

    return logging.getLogger("cman.monitor")


class Monitor:
    """Sample every container each interval; publish to the state file and the HTTP server."""

    def __init__(self, config: MonitorConfig) -> None:
        import threading

        from ..stats import Backends, Selection, StatsCollector

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
        self.lister = Lister(self.collector, config.interval, self.stopping)

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
        app = metrics.wsgi_app(lambda: self._latest, lambda: self._document)
        where = format_listen(self.config.listen)
        try:
            self._server = metrics.make_server(self.config.listen, app)
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
        """Sample the containers of the latest listing (:class:`.lister.Lister`)."""
        snapshot = self.collector.tick(self.lister.latest(timeout=LISTING_TIMEOUT))
        if any(r.status == "gone" for r in snapshot.rows):
            self.lister.poke()  # a container went (or restarted): learn which now, not in FULL_EVERY
        doc = snapshot_document(snapshot, self.config, self.started)
        data = json.dumps(doc, separators=(",", ":")).encode()
        self._document = data
        self._latest = (snapshot, snapshot.duration_s)
        atomic_write(self.config.state_file, data, mode=0o644, fsync=False)  # every interval: no disk flush
        if snapshot.errors != self._last_errors:
            for backend, message in snapshot.errors.items():
                if self._last_errors.get(backend) != message:
                    _log().warning("%s skipped: %s", backend, message)
            self._last_errors = dict(snapshot.errors)
        return snapshot

    def loop(self) -> None:
        """Sample every interval until :attr:`stopping` is set (SIGTERM, SIGINT)."""
        interval = self.config.interval
        self.lister.start()
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


def _gone(pid: int, path: Path, within: float) -> bool:
    """Wait up to ``within`` seconds for ``pid`` to exit and let go of the pidfile's lock."""
    deadline = time.monotonic() + within
    while True:
        if lock_holder(path) != pid and not _alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop(pidfile: Path | None = None, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM the monitor and wait until it has let go of its pidfile; SIGKILL after ``timeout``.

    Returns the stopped monitor's PID, or None when none was running. The files of a
    SIGKILLed daemon are removed only once it is gone: a daemon that survives SIGKILL
    (stuck in the kernel) is a MonitorError (exit 1) and its pidfile stays, so ``status``
    and ``start`` still see it.
    """
    path = (pidfile or default_pidfile()).absolute()
    pid = lock_holder(path)
    if pid is None:
        return None
    if pid <= 0:
        raise MonitorError(f"the monitor holding {path} runs in another PID namespace", hint="stop it from there")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _gone(pid, path, timeout):
        return pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _gone(pid, path, KILL_WAIT):
        raise MonitorError(f"the monitor (PID {pid}) is still there {KILL_WAIT:g} s after SIGKILL; pidfile {path} kept",
                           hint=f"it is stuck in the kernel: see /proc/{pid}/stack, then run `cman monitor stop` again")
    if lock_holder(path) is None:  # it had no chance to clean up (and no new daemon took over)
        for leftover in (path, state_file_for(path)):
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
