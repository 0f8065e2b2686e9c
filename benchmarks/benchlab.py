"""What the benchmarks share: running cman and timing it, a population of busybox containers
spread over the engines, and a monitor daemon started through the real CLI.

Everything a benchmark makes is named with its prefix and removed at the end, also on
failure, Ctrl-C or SIGTERM (:func:`interrupts_as_exceptions`, :meth:`Population.cleanup`),
and the monitor is stopped by its PID. The benchmarks run the checkout's cman
(``python -m cman`` from the repo root) unless told otherwise.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
ROOTFS = Path(os.environ.get("CMAN_TEST_ROOTFS", "/var/lib/cman/images/busybox-rootfs.tar.gz"))
DOCKER_IMAGE = "local/busybox:latest"
ENGINES = ("docker", "lxd", "lxc")
TIMEOUT = 600.0
"""Seconds any one command may take before the benchmark gives up on it."""


def cman_command(spec: str = "") -> list[str]:
    """The cman argv: ``spec`` split on spaces, else the checkout's ``python -m cman``."""
    return spec.split() if spec else [sys.executable, "-m", "cman"]


def bench_env() -> dict[str, str]:
    """The caller's environment without what would point cman elsewhere than this host's engines."""
    drop = ("CMAN_BACKEND", "CMAN_MONITOR_PIDFILE", "CMAN_CONTEXT")
    return {k: v for k, v in os.environ.items() if k not in drop}


def compile_checkout(env: dict[str, str]) -> None:
    """Byte-compile the checkout once, as an installed cman is: no compiling on every start."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "cman"], cwd=ROOT, env=env, check=False,
                   stdout=subprocess.DEVNULL, timeout=TIMEOUT)


def reachable_engines(cman: list[str], env: dict[str, str], wanted: str = "") -> list[str]:
    """The engines of ``wanted`` (comma-separated; default all) that `cman engine status` finds reachable."""
    proc = subprocess.run([*cman, "engine", "status", "--json"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False, timeout=TIMEOUT)
    reachable = [s["backend"] for s in json.loads(proc.stdout or "[]") if s.get("reachable")]
    return [b for b in (wanted.split(",") if wanted else ENGINES) if b in reachable]


# -- timing --


@dataclass(frozen=True)
class Timing:
    """One command's cost: wall seconds, CPU seconds of the child (and its children), its stdout."""

    wall: float
    cpu: float
    stdout: str


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str], env: dict[str, str]) -> Timing:
    """Run ``argv`` once; RUSAGE_CHILDREN deltas are exact only while no other child ends meanwhile."""
    cpu0, t0 = cpu_children(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=TIMEOUT)
    wall, cpu = time.perf_counter() - t0, cpu_children() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return Timing(wall, cpu, proc.stdout)


def measure(argv: list[str], env: dict[str, str], rounds: int, warm: bool = True) -> Timing:
    """Medians of wall and CPU over ``rounds`` runs (after one unmeasured run warming the caches);
    the stdout of the last run."""
    if warm:
        timed(argv, env)
    samples = [timed(argv, env) for _ in range(max(1, rounds))]
    return Timing(statistics.median(s.wall for s in samples), statistics.median(s.cpu for s in samples),
                  samples[-1].stdout)


def process_cpu(pid: int, thread: int | None = None) -> float:
    """CPU seconds (utime + stime) of process ``pid``, all its threads, ended ones included;
    with ``thread``, of that thread alone."""
    stat = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mem_available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def host_line() -> str:
    """CPUs, load averages and available memory: figures on a shared host mean little without them."""
    one, five, fifteen = os.getloadavg()
    return (f"CPUs: {os.cpu_count()}  load: {one:.2f} {five:.2f} {fifteen:.2f}  "
            f"MemAvailable: {mem_available_mb() / 1024:.1f} GB")


# -- interrupts --


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt like Ctrl-C does, so ``finally`` blocks clean up."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def uninterruptible() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while cleaning up. Ignored signals stay ignored in the children
    (Python installs its SIGINT handler only over the default), so a second Ctrl-C cannot stop a
    removal halfway either."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


# -- containers --


@dataclass
class Population:
    """Running busybox containers named ``PREFIX-N``, per engine; :meth:`cleanup` removes them
    all, including any a failed or interrupted create left behind."""

    cman: list[str]
    env: dict[str, str]
    prefix: str
    engines: list[str]
    workers: int = 4
    images: dict[str, str] = field(default_factory=dict)
    made: dict[str, list[str]] = field(default_factory=dict)
    serial: int = 0

    @classmethod
    def new(cls, cman: list[str], env: dict[str, str], kind: str, engines: list[str]) -> Population:
        return cls(cman, env, f"cmanbench-{kind}-{secrets.token_hex(3)}", engines,
                   made={e: [] for e in engines})

    def c(self, *args: str, backend: str | None = None) -> list[str]:
        return [*self.cman, *(["--backend", backend] if backend else []), *args]

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, check=False,
                              timeout=TIMEOUT)

    def prepare_images(self) -> None:
        """Docker uses local/busybox; LXD and LXC get the busybox rootfs imported with `cman image import`."""
        for e in self.engines:
            if e == "docker":
                self.images[e] = DOCKER_IMAGE
                continue
            image = f"{self.prefix}-bb"
            self.images[e] = image  # before the import: cleanup removes a half-made one too
            proc = self.run(self.c("image", "import", str(ROOTFS), image, backend=e))
            if proc.returncode != 0:
                raise RuntimeError(f"{e}: cman image import failed: {proc.stderr.strip()}")

    def count(self, engine: str | None = None) -> int:
        return len(self.made[engine]) if engine else sum(len(v) for v in self.made.values())

    def grow(self, want: dict[str, int]) -> None:
        """Start containers until each engine has ``want[engine]``, ``workers`` at a time, the
        engines interleaved so that their creates overlap."""
        queues = [[e] * max(0, want.get(e, 0) - self.count(e)) for e in self.engines]
        order = [e for batch in zip_longest_all(queues) for e in batch]
        jobs = []
        for e in order:
            name = f"{self.prefix}-{self.serial}"
            self.serial += 1
            self.made[e].append(name)
            jobs.append(self.c("run", "-d", "--name", name, self.images[e], "sleep", "36000", backend=e))
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            failed = [p.stderr.strip() for p in pool.map(self.run, jobs) if p.returncode != 0]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(jobs)} creates failed, the first: {failed[0]}")

    def listed(self) -> dict[str, set[str]]:
        """Names with the prefix that `cman ps -a` lists now, per engine."""
        names: dict[str, set[str]] = {e: set() for e in self.engines}
        proc = self.run(self.c("ps", "-a", "--json"))
        if proc.returncode == 0:
            for row in json.loads(proc.stdout or "[]"):
                if row["name"].startswith(self.prefix + "-") and row["backend"] in names:
                    names[row["backend"]].add(row["name"])
        return names

    def cleanup(self, batch: int = 25) -> None:
        """Remove every container and image this run made: `cman rm -f` in batches, in parallel,
        of every name it asked for and every name with its prefix that cman lists."""
        with uninterruptible():
            listed = self.listed()
            jobs = []
            for e in self.engines:
                names = sorted(set(self.made[e]) | listed[e])
                jobs += [self.c("rm", "-f", *names[i : i + batch], backend=e) for i in range(0, len(names), batch)]
            with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(self.run, jobs))  # a name that was never made fails alone; the rest go
            for e, image in self.images.items():
                if image != DOCKER_IMAGE:
                    self.run(self.c("image", "rm", "--force", image, backend=e))
            left = [f"{e}:{n}" for e, names in self.listed().items() for n in sorted(names)]
            if left:
                print(f"warning: not removed: {' '.join(left)}", file=sys.stderr)


def zip_longest_all(queues: list[list[str]]) -> Iterator[list[str]]:
    """Round-robin over lists of unequal length: [[a, a, a], [b]] gives [a, b], [a], [a]."""
    for i in range(max((len(q) for q in queues), default=0)):
        yield [q[i] for q in queues if i < len(q)]


# -- the monitor daemon --


@dataclass(frozen=True)
class Passes:
    """The monitor's cost over consecutive passes: CPU seconds per pass and containers sampled."""

    passes: int
    cpu_per_pass: float
    main_per_pass: float
    """The main thread's share: the sampling pass itself, without the listing thread and the HTTP server."""
    rows: float
    """Mean number of containers per pass."""


@dataclass(frozen=True)
class Monitor:
    pid: int
    pidfile: Path
    env: dict[str, str]
    """The benchmark's environment with CMAN_MONITOR_PIDFILE pointing at this daemon."""

    @property
    def state_file(self) -> Path:
        return self.pidfile.with_suffix(".json")

    def latest(self) -> tuple[float, list[dict[str, object]]] | None:
        """(timestamp, rows) of the latest pass, None before the first one."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            doc = json.loads(self.state_file.read_text())
            return float(doc["timestamp"]), list(doc["containers"])
        return None

    def wait_for(self, prefix: str, expected: int, timeout: float = 120) -> bool:
        """Wait until a pass sampled ``expected`` running containers named ``prefix-*``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.latest()
            if latest is not None:
                seen = sum(1 for r in latest[1] if str(r["name"]).startswith(prefix) and r["status"] == "ok")
                if seen >= expected:
                    return True
            time.sleep(0.2)
        return False

    def next_pass(self, after: float, timeout: float = 30) -> tuple[float, list[dict[str, object]]]:
        """The first pass published after timestamp ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.latest()
            if latest is not None and latest[0] > after:
                return latest
            time.sleep(0.02)
        raise RuntimeError(f"the monitor published no pass within {timeout:g} s")

    def cost(self, passes: int) -> Passes:
        """The daemon's own CPU (/proc/PID/stat, every thread) from the end of one pass to the
        end of ``passes`` passes later: aligned on passes, not on the clock."""
        stamp, _ = self.next_pass(0.0)
        stamp, _ = self.next_pass(stamp)
        cpu0, main0 = process_cpu(self.pid), process_cpu(self.pid, self.pid)
        rows = 0
        for _ in range(passes):
            stamp, found = self.next_pass(stamp)
            rows += len(found)
        cpu1, main1 = process_cpu(self.pid), process_cpu(self.pid, self.pid)
        return Passes(passes, (cpu1 - cpu0) / passes, (main1 - main0) / passes, rows / passes)


@contextlib.contextmanager
def running_monitor(cman: list[str], env: dict[str, str], interval: float = 1.0) -> Iterator[Monitor]:
    """`cman monitor start` on a free loopback port with a pidfile of its own; stopped by its PID after."""
    with tempfile.TemporaryDirectory(prefix="cmanbench-") as tmp:
        pidfile = Path(tmp) / "monitor.pid"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        menv = {**env, "CMAN_MONITOR_PIDFILE": str(pidfile)}
        proc = subprocess.run([*cman, "monitor", "start", "--interval", f"{interval:g}", "--listen",
                               f"127.0.0.1:{port}", "--pidfile", str(pidfile)], cwd=ROOT, env=menv,
                              capture_output=True, text=True, check=False, timeout=TIMEOUT)
        found = re.search(r"PID (\d+)", proc.stdout)
        if proc.returncode != 0 or found is None:
            raise RuntimeError(f"cman monitor start failed ({proc.returncode}): {proc.stderr.strip()}")
        pid = int(found.group(1))
        try:
            yield Monitor(pid, pidfile, menv)
        finally:
            with uninterruptible():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                    time.sleep(0.1)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
