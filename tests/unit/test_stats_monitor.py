"""Monitor pieces that need no engine: option parsing, the locked pidfile, the state file,
the Prometheus exposition, and the CLI's usage errors and exit codes."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from cman import monitor
from cman._sys.files import atomic_write
from cman.errors import InvalidValue
from cman.monitor import MonitorConfig, MonitorRunning, PidFile, lock_holder, parse_listen, read_state
from cman.monitor.metrics import SnapshotCollector
from cman.stats import ContainerStats, Snapshot

from ..conftest import assert_clean_error, cli


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        (":9000", ("127.0.0.1", 9000)),
        ("9000", ("127.0.0.1", 9000)),
        ("localhost:9001", ("127.0.0.1", 9001)),
        ("[::1]:9002", ("::1", 9002)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "host.example:80",
                                  "::1:9000", "[::1]9000", "127.0.0.1:http"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(InvalidValue, match="--listen"):
        parse_listen(text)


def test_loopback() -> None:
    assert monitor.is_loopback("127.0.0.1") and monitor.is_loopback("::1")
    assert not monitor.is_loopback("0.0.0.0")


def test_default_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(monitor.ENV_PIDFILE, raising=False)
    monkeypatch.setenv(monitor.ENV_RUN_DIR, str(tmp_path))
    assert monitor.default_pidfile() == tmp_path / "monitor.pid"
    assert monitor.state_file_for(tmp_path / "monitor.pid") == tmp_path / "monitor.json"
    monkeypatch.setenv(monitor.ENV_PIDFILE, str(tmp_path / "x.pid"))
    assert monitor.default_pidfile() == tmp_path / "x.pid"
    monkeypatch.delenv(monitor.ENV_RUN_DIR)
    if os.geteuid() == 0:
        assert monitor.run_dir() == Path("/run/cman")


def _hold(path: str, ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event) -> None:
    pidfile = PidFile(Path(path))
    pidfile.acquire()
    ready.set()
    done.wait(30)
    pidfile.release()


def test_pidfile_lock_is_visible_to_others_and_refuses_a_second(tmp_path: Path) -> None:
    path = tmp_path / "run" / "m.pid"
    assert lock_holder(path) is None
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(str(path), ready, done))
    child.start()
    try:
        assert ready.wait(10)
        assert lock_holder(path) == child.pid
        assert path.read_text().strip() == str(child.pid)
        with pytest.raises(MonitorRunning, match=f"PID {child.pid}") as err:
            PidFile(path).acquire()
        assert err.value.exit_code == 4
    finally:
        done.set()
        child.join(10)
    assert not path.exists(), "released pidfiles are removed"
    assert lock_holder(path) is None


def test_stale_pidfile_is_not_running_and_can_be_taken(tmp_path: Path) -> None:
    path = tmp_path / "m.pid"
    path.write_text("999999\n")  # a monitor killed with SIGKILL leaves this, unlocked
    assert lock_holder(path) is None
    pidfile = PidFile(path)
    pidfile.acquire()
    try:
        assert path.read_text().strip() == str(os.getpid())
    finally:
        pidfile.release()


def _row(name: str, cpu: float | None, **kw: object) -> ContainerStats:
    return ContainerStats(name=name, backend="docker", id=f"{name}-id", managed=True, state="running",
                          status="ok" if cpu is not None else "first", pid=7, cpu_percent=cpu,
                          cpu_usage_ns=3 * 10**9, cpu_user_ns=2 * 10**9, cpu_system_ns=10**9, **kw)  # type: ignore[arg-type]


def _snapshot() -> Snapshot:
    return Snapshot(rows=(_row("web", 99.5), _row("new", None)), timestamp=time.time(), duration_s=0.01,
                    backends=("docker",), errors={})


def test_state_file_is_used_only_while_the_pidfile_is_locked(tmp_path: Path) -> None:
    pidfile = tmp_path / "m.pid"
    config = MonitorConfig(interval=1.0, pidfile=pidfile)
    doc = monitor.snapshot_document(_snapshot(), config, started=time.time())
    atomic_write(monitor.state_file_for(pidfile), json.dumps(doc).encode())
    assert read_state(pidfile) is None, "no lock: a leftover of a dead monitor"
    held = PidFile(pidfile)
    held.acquire()
    try:
        # Our own lock is invisible to F_GETLK in this process; ask from a child.
        ctx = multiprocessing.get_context("fork")
        queue: multiprocessing.Queue[object] = ctx.Queue()
        proc = ctx.Process(target=lambda: queue.put(read_state(pidfile)))
        proc.start()
        state = queue.get(timeout=10)
        proc.join(10)
    finally:
        held.release()
    assert state is not None
    assert isinstance(state, monitor.MonitorState)
    assert state.fresh and state.interval_s == 1.0
    assert [r["name"] for r in state.rows] == ["web", "new"]
    assert all(r["sampled_by"] == "monitor" for r in state.rows)


def test_old_state_is_not_fresh() -> None:
    st = monitor.MonitorState(pid=1, listen="", interval_s=1.0, started=0, timestamp=time.time() - 10,
                              backends=(), errors={}, rows=())
    assert not st.fresh


def test_metrics_exposition_names_labels_and_unknowns() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: (_snapshot(), 0.01)))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    seconds = families["cman_container_cpu_seconds"]
    assert seconds.type == "counter"
    got = {(s.labels["name"], s.labels["mode"]): s.value for s in seconds.samples}
    assert got[("web", "user")] == 2.0 and got[("web", "system")] == 1.0
    assert all(s.labels["backend"] == "docker" for s in seconds.samples)
    percent = families["cman_container_cpu_percent"]
    assert percent.type == "gauge"
    assert [(s.labels["name"], s.value) for s in percent.samples] == [("web", 99.5)], "unknown is absent, not 0"
    assert families["cman_monitor_containers"].samples[0].value == 2


# -- the CLI without an engine: usage errors and exit codes ----------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("stats", "--no-stream", "--interval", "0"), "--interval"),
        (("stats", "--interval", "abc"), "--interval"),
        (("stats", "--cgroup", "v3"), "--cgroup"),
        (("top", "--interval", "-1"), "--interval"),
        (("monitor", "start", "--listen", "somewhere"), "--listen"),
        (("monitor", "run", "--listen", "127.0.0.1:70000"), "port"),
        (("monitor", "start", "--interval", "0"), "--interval"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args: tuple[str, ...], needle: str) -> None:
    assert_clean_error(cli(*args), 2, needle)


def test_top_needs_a_terminal() -> None:
    assert_clean_error(cli("top"), 2, "terminal")


def test_status_and_stop_when_not_running(tmp_path: Path) -> None:
    pidfile = str(tmp_path / "m.pid")
    proc = cli("monitor", "status", "--pidfile", pidfile)
    assert proc.returncode == 3, proc.stderr
    assert "stopped" in proc.stdout
    proc = cli("monitor", "status", "--pidfile", pidfile, "--json")
    assert proc.returncode == 3 and json.loads(proc.stdout)["running"] is False
    proc = cli("monitor", "stop", "--pidfile", pidfile)
    assert proc.returncode == 0 and "not running" in proc.stderr


class _SignalsLost:
    """``os`` for cman.monitor.daemon, except that ``kill`` reaches nobody: a daemon stuck in
    the kernel (state D) survives SIGTERM and SIGKILL alike."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def kill(self, pid: int, sig: int) -> None:
        self.sent.append(sig)

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)


def test_stop_keeps_the_pidfile_of_a_daemon_that_survives_sigkill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import signal

    from cman.monitor import MonitorError, daemon

    path = tmp_path / "m.pid"
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(str(path), ready, done))
    child.start()
    try:
        assert ready.wait(10)
        lost = _SignalsLost()
        monkeypatch.setattr(daemon, "os", lost)
        monkeypatch.setattr(daemon, "KILL_WAIT", 0.3, raising=False)
        with pytest.raises(MonitorError, match=f"PID {child.pid}.*after SIGKILL.*kept") as err:
            monitor.stop(path, timeout=0.3)
        assert err.value.exit_code == 1
        assert lost.sent == [signal.SIGTERM, signal.SIGKILL]
        assert path.exists() and lock_holder(path) == child.pid, "still running: its pidfile stays"
        assert monitor.status(path).running
    finally:
        done.set()
        child.join(10)
