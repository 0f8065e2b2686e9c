"""Engine restarts mid-command (issue 13): dockerd, the LXD daemon and the registry are stopped
and started again while ``run``, ``ps``, ``stats``, ``pull`` and the monitor are working.

For each daemon, worker threads loop real ``cman`` commands on the engine it serves; after a
warm-up the daemon is stopped (SIGTERM to the PID ``scripts/setup-engines.sh`` recorded in
``/run/cman-NAME.pid``, SIGKILL after 30 s), then brought back by ``scripts/setup-engines.sh``
(which starts what is down), and the workers go on for a while. Then:

- every command either finished (0) or failed with one line on stderr (after a pull's
  progress, if any) and the code the README
  documents for an engine that went away: 5 (unavailable) or 7 (no answer in time), and
  ``run``'s own 125 (Docker's convention: cman or the engine failed); never a traceback;
- at least one command did fail while the daemon was down (else the fault was not injected);
- nothing is half-made: a ``run -d`` that failed left no container once ``cman system prune``
  has removed what a daemon that died mid-create kept; every ``run -d`` that succeeded still
  has its container;
- the monitor (one, over the whole module) kept serving ``/metrics`` throughout, and picks the
  engine up again: a container started after the restart shows in ``/metrics``.

The figures are printed. Raw LXC has no daemon. This module runs last (marker ``restarts``,
moved to the end of the run by tests/conftest.py), and every daemon is started again in a
``finally``, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..conftest import PREFIX, REGISTRY_IMAGE, cli, require_root, selected_engines, unavailable
from .daemonlab import imported, running_monitor, scrape

pytestmark = [pytest.mark.engine, pytest.mark.restarts]

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup-engines.sh"
WARM_UP = 3.0
AFTER = 8.0
"""Seconds the workers go on once the daemon is back."""
ENGINE_GONE = {5, 7}
RUN_FAILED = {125}


@dataclass
class Outcome:
    argv: tuple[str, ...]
    code: int
    stderr: str
    started: float
    ended: float

    def __str__(self) -> str:
        return f"cman {' '.join(self.argv)} -> {self.code}: {self.stderr.strip()[:300]!r}"


@dataclass
class Phase:
    """One daemon's restart and what the commands around it did."""

    daemon: str
    backend: str
    outcomes: list[Outcome] = field(default_factory=list)
    run_d: dict[str, int] = field(default_factory=dict)
    """Name of each ``run -d`` -> its exit code."""
    down: tuple[float, float] = (0.0, 0.0)
    """When the daemon was stopped, and when setup-engines had it back."""
    pruned: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, argv: tuple[str, ...], proc: subprocess.CompletedProcess[str], started: float) -> None:
        with self.lock:
            self.outcomes.append(Outcome(argv, proc.returncode, proc.stderr, started, time.monotonic()))


def _pid(daemon: str) -> int:
    """The PID setup-engines.sh recorded for ``daemon``, when that process still runs it."""
    path = Path(f"/run/cman-{daemon}.pid")
    want = {"dockerd": b"dockerd", "lxd": b"lxd", "registry": b"docker-registry"}[daemon]
    try:
        pid = int(path.read_text().strip())
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (OSError, ValueError):
        unavailable(f"{daemon} was not started by scripts/setup-engines.sh ({path} names no live process)")
    if os.path.basename(argv0) != want:
        unavailable(f"{path} names PID {pid}, which is not {want.decode()}")
    return pid


def _bring_back() -> None:
    proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"setup-engines.sh could not start the engines again:\n{proc.stderr[-3000:]}"


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # not our child in CI; harmless when it is not
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)
    while os.path.exists(f"/proc/{pid}") and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        time.sleep(0.1)


@dataclass
class Monitor:
    pid: int
    port: int
    state_file: Path
    scrapes: int = 0
    failures: list[str] = field(default_factory=list)

    def scrape(self) -> str:
        try:
            text = scrape(self.port)
        except OSError as err:
            self.failures.append(f"{time.strftime('%H:%M:%S')}: {err}")
            return ""
        self.scrapes += 1
        return text


@pytest.fixture(scope="module")
def daemons() -> Iterator[None]:
    """Root, and the daemons to restart started by setup-engines.sh; all of them up again after."""
    require_root("restarting the engines' daemons")
    if not SETUP.is_file():
        unavailable(f"{SETUP} is missing")
    try:
        yield
    finally:
        _bring_back()


@pytest.fixture(scope="module")
def images(daemons: None) -> Iterator[dict[str, str]]:
    with imported([e for e in ("docker", "lxd") if e in selected_engines()], f"{PREFIX}-rsbb") as made:
        yield made


@pytest.fixture(scope="module")
def monitor(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitor]:
    with running_monitor(tmp_path_factory.mktemp("restart-monitor"), 1.0) as running:
        yield Monitor(running.pid, running.port, running.state_file)


def _loop(phase: Phase, stop: threading.Event, make: Callable[[int], tuple[str, ...]],
          env: dict[str, str] | None = None) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        argv = make(n)
        started = time.monotonic()
        proc = cli(*argv, backend=phase.backend, env=env, timeout=240)
        phase.record(argv, proc, started)
        if argv[:2] == ("run", "-d"):
            phase.run_d[argv[argv.index("--name") + 1]] = proc.returncode
        stop.wait(0.2)


def _restart(phase: Phase, workers: dict[str, tuple[Callable[[int], tuple[str, ...]], dict[str, str] | None]],
             monitor: Monitor) -> None:
    """Run the workers, restart ``phase.daemon`` under them, let them go on, stop them."""
    pid = _pid(phase.daemon)
    stop = threading.Event()
    threads = [threading.Thread(target=_loop, args=(phase, stop, make, env), name=f"{phase.daemon}-{what}")
               for what, (make, env) in workers.items()]
    try:
        for t in threads:
            t.start()
        time.sleep(WARM_UP)
        down = time.monotonic()
        _stop(pid)
        time.sleep(1.0)  # commands meet a daemon that is gone, not one that is stopping
        monitor.scrape()
        _bring_back()
        phase.down = (down, time.monotonic())
        deadline = time.monotonic() + AFTER
        while time.monotonic() < deadline:
            monitor.scrape()
            time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)


def _judge(phase: Phase) -> list[str]:
    """What went wrong: codes outside the documented ones, more than one line, a traceback."""
    bad = []
    for out in phase.outcomes:
        if out.code == 0:
            continue
        allowed = RUN_FAILED if out.argv[0] == "run" else ENGINE_GONE
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        said = [ln for ln in lines if ln.startswith("cman: ")]  # the rest is a pull's progress
        if out.code not in allowed or len(said) != 1 or lines[-1] != said[0] or "Traceback" in out.stderr:
            bad.append(str(out))
    return bad


def _settle_and_check(phase: Phase, monitor: Monitor, image: str) -> None:
    """Prune what a daemon that died mid-create kept, then: no container of a failed run -d,
    every successful one there; the monitor serves the engine again."""
    pruned = cli("system", "prune", "--json", backend=phase.backend)
    assert pruned.returncode == 0, pruned.stderr
    phase.pruned = [str(item) for item in json.loads(pruned.stdout or "[]") if PREFIX in str(item)]
    listed = cli("ps", "-a", "--json", backend=phase.backend)
    assert listed.returncode == 0, listed.stderr
    present = {str(c["name"]) for c in json.loads(listed.stdout)}
    failed_left = sorted(n for n, code in phase.run_d.items() if code != 0 and n in present)
    lost = sorted(n for n, code in phase.run_d.items() if code == 0 and n not in present)
    assert not failed_left, f"{phase.daemon}: failed run -d left containers: {failed_left}"
    assert not lost, f"{phase.daemon}: containers of successful run -d are gone: {lost}"

    after = f"{PREFIX}-rs-{phase.daemon}-after"
    proc = cli("run", "-d", "--name", after, image, "sleep", "120", backend=phase.backend)
    assert proc.returncode == 0, proc.stderr
    phase.run_d[after] = 0
    deadline = time.monotonic() + 30
    while after not in monitor.scrape() and time.monotonic() < deadline:
        time.sleep(1.0)
    assert after in monitor.scrape(), f"the monitor did not pick {phase.backend} up again"
    assert os.path.exists(f"/proc/{monitor.pid}"), "the monitor died"


def _report(phase: Phase) -> None:
    during = [o for o in phase.outcomes if o.code != 0]
    by_cmd: dict[str, list[int]] = {}
    for o in phase.outcomes:
        key = " ".join(o.argv[:2]) if o.argv[0] == "run" else o.argv[0]
        by_cmd.setdefault(key, []).append(o.code)
    print(f"\n== {phase.daemon} restart ({phase.backend}): down {phase.down[1] - phase.down[0]:.1f} s;"
          f" {len(phase.outcomes)} commands, {len(during)} failed cleanly; pruned {len(phase.pruned)} ==")
    for key, codes in sorted(by_cmd.items()):
        counts = {c: codes.count(c) for c in sorted(set(codes))}
        print(f"  {key:10} {counts}")


def _cleanup(phase: Phase) -> None:
    for name in phase.run_d:
        cli("rm", "-f", name, backend=phase.backend)


def _workers(phase: Phase, image: str, pull: tuple[str, dict[str, str] | None] | None
             ) -> dict[str, tuple[Callable[[int], tuple[str, ...]], dict[str, str] | None]]:
    tag = f"{PREFIX}-rs-{phase.daemon}-"
    out: dict[str, tuple[Callable[[int], tuple[str, ...]], dict[str, str] | None]] = {
        "ps": (lambda n: ("ps", "-a"), None),
        "stats": (lambda n: ("stats", "--no-stream"), None),
        "run-rm": (lambda n: ("run", "--rm", image, "true"), None),
        "run-d": (lambda n: ("run", "-d", "--name", f"{tag}{n:03d}", image, "sleep", "120"), None),
    }
    if pull is not None:
        ref, env = pull
        out["pull"] = (lambda n: ("pull", ref), env)
    return out


def _phase(daemon: str, backend: str, images: dict[str, str], monitor: Monitor,
           workers: Callable[[Phase, str], dict[str, tuple[Callable[[int], tuple[str, ...]], dict[str, str] | None]]]
           ) -> None:
    if backend not in images:
        unavailable(f"{backend} is not among the selected engines")
    phase = Phase(daemon, backend)
    try:
        _restart(phase, workers(phase, images[backend]), monitor)
        _report(phase)
        bad = _judge(phase)
        assert not bad, f"{daemon} restart: commands that failed badly:\n" + "\n".join(bad[:20])
        down = [o for o in phase.outcomes if o.code != 0]
        assert down, f"no command failed while {daemon} was down: the fault was not injected"
        _settle_and_check(phase, monitor, images[backend])
        assert not monitor.failures, "the monitor stopped serving /metrics:\n" + "\n".join(monitor.failures)
    finally:
        _cleanup(phase)


def test_dockerd_restart(images: dict[str, str], monitor: Monitor) -> None:
    _phase("dockerd", "docker", images, monitor,
           lambda phase, image: _workers(phase, image, (REGISTRY_IMAGE, None)))


def test_lxd_restart(images: dict[str, str], monitor: Monitor, tmp_path: Path) -> None:
    from . import test_lxd_pull

    folder = tmp_path / "server"
    folder.mkdir()
    with test_lxd_pull.serve(folder) as server:
        try:
            _phase("lxd", "lxd", images, monitor,
                   lambda phase, image: _workers(phase, image, (f"{server.remote}:{server.alias}", server.env())))
        finally:
            cli("image", "rm", server.fingerprint, backend="lxd", env=server.env())


def test_registry_restart(images: dict[str, str], monitor: Monitor) -> None:
    """Only pulls talk to the registry: they fail while it is down (as the engine reports it),
    and work again once it is back; the rest of Docker goes on undisturbed."""
    def workers(phase: Phase, image: str) -> dict[str, tuple[Callable[[int], tuple[str, ...]], dict[str, str] | None]]:
        return {"pull": (lambda n: ("pull", REGISTRY_IMAGE), None), "ps": (lambda n: ("ps", "-a"), None)}

    _phase("registry", "docker", images, monitor, workers)
