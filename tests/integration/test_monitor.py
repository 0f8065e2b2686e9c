"""`cman monitor` as a real daemon on every engine: start, refuse a second start, metrics over
loopback, `stats` through the monitor, stop, restart, SIGTERM, foreground `run`.

Every monitor here uses a pidfile, state file and log under tmp_path and a free loopback
port, and is stopped in teardown (SIGKILLed by PID if `stop` failed), also when a test fails.
`stats` finds the test's monitor through $CMAN_MONITOR_PIDFILE.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Engine, assert_clean_error, cli
from .daemonlab import scrape

pytestmark = pytest.mark.engine

BUSY = ("sh", "-c", "while :; do :; done")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not yet reaped by init) counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Monitor:
    eng: Engine
    dir: Path
    port: int
    pids: list[int]

    @property
    def pidfile(self) -> Path:
        return self.dir / "monitor.pid"

    @property
    def state_file(self) -> Path:
        return self.dir / "monitor.json"

    @property
    def log(self) -> Path:
        return self.dir / "monitor.log"

    @property
    def env(self) -> dict[str, str]:
        return {"CMAN_MONITOR_PIDFILE": str(self.pidfile)}

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **kw.pop("env", {})}
        return self.eng.cli(*args, env=env, **kw)

    def options(self, interval: str = "0.5") -> list[str]:
        return ["--interval", interval, "--listen", f"127.0.0.1:{self.port}", "--pidfile", str(self.pidfile),
                "--log", str(self.log)]

    def start(self, *, interval: str = "0.5") -> int:
        proc = self.cli("monitor", "start", *self.options(interval))
        assert proc.returncode == 0, proc.stderr
        match = re.search(r"PID (\d+)", proc.stdout)
        assert match, proc.stdout
        pid = int(match.group(1))
        self.pids.append(pid)
        return pid

    def stop(self) -> subprocess.CompletedProcess[str]:
        return self.cli("monitor", "stop", "--pidfile", str(self.pidfile))

    def samples(self) -> dict[str, Any]:
        """The state file, or an empty document before the first pass."""
        try:
            return dict(json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return {"containers": []}


@pytest.fixture
def monitor(eng: Engine, tmp_path: Path) -> Iterator[Monitor]:
    mon = Monitor(eng, tmp_path, free_port(), [])
    try:
        yield mon
    finally:
        mon.stop()
        for pid in mon.pids:  # only the daemons this test started
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def run_busy(eng: Engine, tag: str) -> str:
    name = eng.name_for(tag)
    proc = eng.cli("run", "-d", "--name", name, eng.image, *BUSY)
    assert proc.returncode == 0, proc.stderr
    return name


def test_start_is_a_daemon_and_a_second_start_is_refused(monitor: Monitor) -> None:
    pid = monitor.start()
    assert monitor.pidfile.read_text().strip() == str(pid)
    assert alive(pid)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ppid, pgrp, session = int(stat[1]), int(stat[2]), int(stat[3])
    assert session != os.getsid(0), "setsid: a session of its own"
    assert pid != session, "forked again after setsid: not a session leader, cannot get a terminal"
    assert pgrp == session
    assert ppid != os.getpid()
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/1") == str(monitor.log)
    second = monitor.cli("monitor", "start", *monitor.options())
    assert_clean_error(second, 4, "already running", f"PID {pid}")
    status = monitor.cli("monitor", "status", "--pidfile", str(monitor.pidfile))
    assert status.returncode == 0 and f"PID {pid}" in status.stdout and "running" in status.stdout
    info = json.loads(monitor.cli("monitor", "status", "--pidfile", str(monitor.pidfile), "--json").stdout)
    assert info["running"] is True and info["pid"] == pid
    assert info["listen"] == f"127.0.0.1:{monitor.port}"


def test_metrics_over_loopback_with_labels(monitor: Monitor) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    name = run_busy(monitor.eng, "metrics")
    monitor.start()

    def families() -> dict[str, Any] | None:
        found = {f.name: f for f in text_string_to_metric_families(scrape(monitor.port))}
        percent = [s for s in found["cman_container_cpu_percent"].samples if s.labels["name"] == name]
        return found if percent else None

    found = wait_for(families, what=f"a cpu_percent sample for {name}")
    seconds = [s for s in found["cman_container_cpu_seconds"].samples if s.labels["name"] == name]
    assert found["cman_container_cpu_seconds"].type == "counter"
    assert {s.labels["mode"] for s in seconds} == {"user", "system"}
    assert all(s.labels["backend"] == monitor.eng.name and s.name == "cman_container_cpu_seconds_total" for s in seconds)
    user = next(s.value for s in seconds if s.labels["mode"] == "user")
    assert user > 0
    percent = next(s for s in found["cman_container_cpu_percent"].samples if s.labels["name"] == name)
    assert percent.labels == {"name": name, "backend": monitor.eng.name}
    assert 0 < percent.value <= 110
    samples = json.loads(scrape(monitor.port, "/samples.json"))
    assert any(r["name"] == name for r in samples["containers"])
    # The counter keeps growing between scrapes (a busy loop).
    later = wait_for(lambda: [s.value for f in text_string_to_metric_families(scrape(monitor.port))
                              if f.name == "cman_container_cpu_seconds" for s in f.samples
                              if s.labels["name"] == name and s.labels["mode"] == "user" and s.value > user],
                     what="the counter to grow")
    assert later


def test_listens_on_loopback_only_by_default(monitor: Monitor) -> None:
    pid = monitor.start()
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    port_hex = f"{monitor.port:04X}"
    ours = [line.split() for line in listening if line.split()[1].endswith(f":{port_hex}") and line.split()[3] == "0A"]
    assert ours, f"nothing listens on {monitor.port}"
    assert all(fields[1].startswith("0100007F:") for fields in ours), "127.0.0.1 only"
    assert alive(pid)


def test_stats_through_the_monitor_answers_at_once(monitor: Monitor) -> None:
    name = run_busy(monitor.eng, "fast")
    monitor.start()
    wait_for(lambda: any(r["name"] == name and r["status"] == "ok" for r in monitor.samples()["containers"]),
             what=f"the monitor to have a rate for {name}")
    started = time.monotonic()
    proc = monitor.cli("stats", "--no-stream", "--json", "--interval", "5", name)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)[0]
    assert row["sampled_by"] == "monitor"
    assert row["name"] == name and row["backend"] == monitor.eng.name
    assert row["cpu_percent"] is not None and row["cpu_percent"] > 20
    assert took < 2.5, f"{took:.2f}s: it waited instead of reading the monitor's samples"
    # --no-monitor (and a different --cgroup) sample directly.
    direct = json.loads(monitor.cli("stats", "--no-stream", "--no-monitor", "--json", "--interval", "0.5", name).stdout)
    assert direct[0]["sampled_by"] == "cman"
    # The default listing (managed containers of this backend) comes from the monitor too.
    listed = json.loads(monitor.cli("stats", "--no-stream", "--json").stdout)
    assert any(r["name"] == name and r["sampled_by"] == "monitor" for r in listed)


def test_stop_removes_pidfile_then_restart(monitor: Monitor) -> None:
    pid = monitor.start()
    stopped = monitor.stop()
    assert stopped.returncode == 0 and f"PID {pid}" in stopped.stdout
    wait_for(lambda: not alive(pid), what="the daemon to exit")
    assert not monitor.pidfile.exists()
    assert not monitor.state_file.exists()
    assert monitor.cli("monitor", "status", "--pidfile", str(monitor.pidfile)).returncode == 3
    again = monitor.stop()
    assert again.returncode == 0 and "not running" in again.stderr
    first = monitor.start()
    restarted = monitor.cli("monitor", "restart", *monitor.options())
    assert restarted.returncode == 0, restarted.stderr
    new = int(re.search(r"started: PID (\d+)", restarted.stdout).group(1))  # type: ignore[union-attr]
    monitor.pids.append(new)
    assert new != first and alive(new) and not alive(first)
    assert monitor.pidfile.read_text().strip() == str(new)
    log = monitor.log.read_text()
    assert "stopped" in log and "Traceback" not in log


def test_sigterm_shuts_down_cleanly(monitor: Monitor) -> None:
    pid = monitor.start()
    wait_for(monitor.state_file.exists, what="the first samples")
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), what="the daemon to exit on SIGTERM")
    assert not monitor.pidfile.exists() and not monitor.state_file.exists()
    assert "received SIGTERM" in monitor.log.read_text()


def test_killed_monitor_leaves_nothing_that_misleads(monitor: Monitor) -> None:
    pid = monitor.start()
    wait_for(monitor.state_file.exists, what="the first samples")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), what="the daemon to die")
    assert monitor.pidfile.exists(), "SIGKILL leaves the file, but not the lock"
    assert monitor.cli("monitor", "status", "--pidfile", str(monitor.pidfile)).returncode == 3
    proc = monitor.cli("stats", "--no-stream", "--json", "--all", "--interval", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert all(r["sampled_by"] == "cman" for r in json.loads(proc.stdout)), "stale samples are not used"
    monitor.start()  # the stale pidfile is taken over


def test_port_in_use_is_a_clean_error_and_leaves_no_pidfile(monitor: Monitor) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", monitor.port))
        taken.listen()
        proc = monitor.cli("monitor", "start", *monitor.options())
    assert_clean_error(proc, 1, "address already in use", "--listen")
    assert not monitor.pidfile.exists()


def test_run_in_the_foreground_until_sigterm(monitor: Monitor) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CMAN_BACKEND"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cman", "--backend", monitor.eng.name, "monitor", "run",
         "--interval", "0.5", "--listen", f"127.0.0.1:{monitor.port}", "--pidfile", str(monitor.pidfile)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=env,
    )
    monitor.pids.append(proc.pid)
    try:
        wait_for(monitor.state_file.exists, what="the foreground monitor's samples")
        assert monitor.pidfile.read_text().strip() == str(proc.pid)
        assert "# TYPE cman_container_cpu_percent gauge" in scrape(monitor.port)
        status = monitor.cli("monitor", "status", "--pidfile", str(monitor.pidfile))
        assert status.returncode == 0 and str(proc.pid) in status.stdout
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped" in err
    assert not monitor.pidfile.exists()


def test_user_errors_are_one_line(monitor: Monitor) -> None:
    assert_clean_error(monitor.cli("monitor", "start", "--interval", "0", "--pidfile", str(monitor.pidfile)), 2, "--interval")
    assert_clean_error(monitor.cli("monitor", "start", "--listen", "1.2.3.4.5:80", "--pidfile", str(monitor.pidfile)), 2, "--listen")
    assert not monitor.pidfile.exists()
    assert_clean_error(cli("monitor", "start", "--pidfile", "/proc/cman/monitor.pid", "--listen", f"127.0.0.1:{monitor.port}"),
                       1, "/proc/cman")
