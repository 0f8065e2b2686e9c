#!/usr/bin/env python3
"""`cman stats --no-stream --json` against `docker stats --no-stream`, side by side in one run.

    python benchmarks/bench_stats.py [--counts 20,100] [--rounds 3] [--backends docker,lxd,lxc]

For each count it makes that many running containers (prefix cmanbench-stats-XXXXXX),
spread round-robin over the reachable backends (Docker: local/busybox:latest; LXD and
LXC: the busybox rootfs imported with `cman image import`), then prints medians of:

- wall time of `cman stats --no-stream --json` (one 1 s interval; target <= 1.3 s)
  and of `docker stats --no-stream` (Docker's containers only);
- cman's CPU time (RUSAGE_CHILDREN deltas): total, per container, and the marginal
  cost per container between two counts (target <= 1 ms), next to `cman --version`,
  the interpreter + CLI start-up floor that any command pays once;
- the monitor path: `cman stats --no-stream --json` answered from a running
  `cman monitor` (target <= 0.2 s), and the monitor's own CPU per pass.

Figures only, no asserts. Everything it creates is removed at the end, also on failure.
It runs the checkout's cman (`python -m cman` from the repo root) unless --cman is given.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOTFS = Path(os.environ.get("CMAN_TEST_ROOTFS", "/var/lib/cman/images/busybox-rootfs.tar.gz"))
DOCKER_IMAGE = "local/busybox:latest"


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, stdout)."""
    cpu0, t0 = cpu_children(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    wall, cpu = time.perf_counter() - t0, cpu_children() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return wall, cpu, proc.stdout


def medians(samples: list[tuple[float, float, str]]) -> tuple[float, float, str]:
    return (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples), samples[-1][2])


class Bench:
    def __init__(self, cman: list[str], backends: list[str], rounds: int) -> None:
        self.cman = cman
        self.backends = backends
        self.rounds = rounds
        self.prefix = f"cmanbench-stats-{secrets.token_hex(3)}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("CMAN_BACKEND", "CMAN_MONITOR_PIDFILE")}
        self.made: dict[str, list[str]] = {b: [] for b in backends}
        self.images: dict[str, str] = {}

    def c(self, *args: str, backend: str | None = None) -> list[str]:
        return [*self.cman, *(["--backend", backend] if backend else []), *args]

    # -- containers --

    def prepare_images(self) -> None:
        for b in self.backends:
            if b == "docker":
                self.images[b] = DOCKER_IMAGE
                continue
            image = f"{self.prefix}-bb"
            subprocess.run(self.c("image", "import", str(ROOTFS), image, backend=b), check=True, cwd=ROOT,
                           env=self.env, stdout=subprocess.DEVNULL)
            self.images[b] = image

    def grow_to(self, total: int) -> None:
        have = sum(len(v) for v in self.made.values())
        jobs = []
        for i in range(have, total):
            b = self.backends[i % len(self.backends)]
            name = f"{self.prefix}-{i}"
            self.made[b].append(name)
            jobs.append(self.c("run", "-d", "--name", name, self.images[b], "sleep", "36000", backend=b))
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for proc in pool.map(lambda argv: subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True), jobs):
                if proc.returncode != 0:
                    raise RuntimeError(f"creating a container failed: {proc.stderr.strip()}")

    def cleanup(self) -> None:
        for b, names in self.made.items():
            for i in range(0, len(names), 20):
                subprocess.run(self.c("rm", "-f", *names[i : i + 20], backend=b), cwd=ROOT, env=self.env,
                               capture_output=True, check=False)
        for b, image in self.images.items():
            if image != DOCKER_IMAGE:
                subprocess.run(self.c("image", "rm", "--force", image, backend=b), cwd=ROOT, env=self.env,
                               capture_output=True, check=False)

    # -- measurements --

    def cman_stats(self, backend: str | None = None) -> tuple[float, float, int]:
        argv = self.c("stats", "--no-stream", "--no-monitor", "--json", backend=backend)
        timed(argv, self.env)  # warm caches
        wall, cpu, out = medians([timed(argv, self.env) for _ in range(self.rounds)])
        return wall, cpu, len(json.loads(out))

    def cman_ps(self, backend: str) -> float:
        """CPU of `cman --backend B ps`: start-up plus the backend's listing, without sampling."""
        argv = self.c("ps", backend=backend)
        timed(argv, self.env)
        return medians([timed(argv, self.env) for _ in range(self.rounds)])[1]

    def docker_stats(self) -> tuple[float, int] | None:
        if "docker" not in self.backends or shutil.which("docker") is None:
            return None
        argv = ["docker", "stats", "--no-stream"]
        wall, _, out = medians([timed(argv, self.env) for _ in range(self.rounds)])
        return wall, len(out.splitlines()) - 1

    def floor(self) -> tuple[float, float]:
        argv = self.c("--version")
        timed(argv, self.env)
        wall, cpu, _ = medians([timed(argv, self.env) for _ in range(max(5, self.rounds))])
        return wall, cpu

    def monitor_path(self, expected: int) -> tuple[float, float, float, int]:
        """(median wall, median CPU of `stats` via the monitor, monitor CPU per pass, rows)."""
        with tempfile.TemporaryDirectory(prefix="cmanbench-") as tmp:
            pidfile = Path(tmp) / "monitor.pid"
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            env = {**self.env, "CMAN_MONITOR_PIDFILE": str(pidfile)}
            subprocess.run(self.c("monitor", "start", "--interval", "1", "--listen", f"127.0.0.1:{port}",
                                  "--pidfile", str(pidfile)), cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
            pid = int(pidfile.read_text())
            try:
                state = pidfile.with_suffix(".json")
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    with contextlib.suppress(OSError, ValueError):
                        rows = json.loads(state.read_text())["containers"]
                        if sum(1 for r in rows if r["name"].startswith(self.prefix) and r["status"] == "ok") >= expected:
                            break
                    time.sleep(0.2)
                argv = self.c("stats", "--no-stream", "--json")
                timed(argv, env)
                samples = [timed(argv, env) for _ in range(max(5, self.rounds))]
                wall, cpu, out = medians(samples)
                rows = json.loads(out)
                if not all(r["sampled_by"] == "monitor" for r in rows):
                    print("  (warning: the monitor did not answer; figures are of direct sampling)")
                per_pass = self.monitor_cpu_per_pass(pid)
                return wall, cpu, per_pass, len(rows)
            finally:
                subprocess.run(self.c("monitor", "stop", "--pidfile", str(pidfile)), cwd=ROOT, env=env,
                               capture_output=True, check=False)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    @staticmethod
    def monitor_cpu_per_pass(pid: int, seconds: float = 5.0) -> float:
        def cpu() -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu()
        time.sleep(seconds)
        return (cpu() - before) / seconds  # one pass per second


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="20,100", help="container counts, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", default="", help="default: every reachable one of docker, lxd, lxc")
    ap.add_argument("--cman", default="", help="cman command (default: python -m cman from the checkout)")
    args = ap.parse_args()
    cman = args.cman.split() if args.cman else [sys.executable, "-m", "cman"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "cman"], cwd=ROOT, env=env, check=False,
                   stdout=subprocess.DEVNULL)  # as installed: no compiling on every start
    status = json.loads(subprocess.run([*cman, "engine", "status", "--json"], cwd=ROOT, capture_output=True,
                                       text=True, check=False).stdout or "[]")
    reachable = [s["backend"] for s in status if s.get("reachable")]
    backends = [b for b in (args.backends.split(",") if args.backends else reachable) if b in reachable]
    if not backends:
        print("no reachable backend")
        return 1
    counts = sorted(int(c) for c in args.counts.split(","))
    bench = Bench(cman, backends, args.rounds)
    print(f"cman: {' '.join(cman)}  python {sys.version.split()[0]}  backends: {', '.join(backends)}  "
          f"CPUs: {os.cpu_count()}  rounds: {args.rounds} (medians)  load: {os.getloadavg()[0]:.2f}")
    floor_wall, floor_cpu = bench.floor()
    print(f"start-up floor (`cman --version`): wall {floor_wall * 1000:.0f} ms, CPU {floor_cpu * 1000:.0f} ms\n")
    results: list[tuple[int, float]] = []
    per_backend: dict[str, list[tuple[int, float, float]]] = {b: [] for b in backends}  # (rows, stats CPU, ps CPU)
    try:
        bench.prepare_images()
        for n in counts:
            bench.grow_to(n)
            spread = ", ".join(f"{b} {len(v)}" for b, v in bench.made.items())
            wall, cpu, rows = bench.cman_stats()
            results.append((rows, cpu))
            print(f"== {n} containers ({spread}); cman stats listed {rows} (includes other managed ones)")
            print(f"  cman stats --no-stream --json   wall {wall:6.3f} s (interval 1 s + {wall - 1:5.3f} s; target <= +0.3 s)")
            print(f"                                  CPU  {cpu * 1000:6.1f} ms = {cpu * 1000 / rows:5.2f} ms/container "
                  f"(minus start-up floor: {(cpu - floor_cpu) * 1000 / rows:5.2f} ms/container)")
            docker = bench.docker_stats()
            if docker is not None:
                d_wall, d_rows = docker
                print(f"  docker stats --no-stream        wall {d_wall:6.3f} s ({d_rows} docker containers)   "
                      f"cman/docker wall: {wall / d_wall:4.2f}x")
            m_wall, m_cpu, m_pass, m_rows = bench.monitor_path(sum(len(v) for v in bench.made.values()))
            print(f"  via a running monitor           wall {m_wall * 1000:6.0f} ms (target <= 200 ms), "
                  f"CPU {m_cpu * 1000:.0f} ms, {m_rows} rows")
            print(f"  monitor's own CPU per 1 s pass  {m_pass * 1000:6.1f} ms = {m_pass * 1000 / max(1, m_rows):5.2f} ms/container")
            for b in backends:
                b_wall, b_cpu, b_rows = bench.cman_stats(b)
                b_ps = bench.cman_ps(b)
                per_backend[b].append((b_rows, b_cpu, b_ps))
                print(f"  --backend {b:<6} stats: {b_rows:3d} rows, wall {b_wall:6.3f} s, CPU {b_cpu * 1000:6.1f} ms"
                      f"   (`ps`: CPU {b_ps * 1000:6.1f} ms)")
            print()
        if len(results) >= 2:
            (r0, c0), (r1, c1) = results[0], results[-1]
            if r1 > r0:
                print(f"marginal cman CPU per container ({r0} -> {r1}): {(c1 - c0) * 1000 / (r1 - r0):.2f} ms (target <= 1 ms)")
            for b, rows in per_backend.items():
                (n0, s0, p0), (n1, s1, p1) = rows[0], rows[-1]
                if n1 > n0:
                    stats_ms, ps_ms = (s1 - s0) * 1000 / (n1 - n0), (p1 - p0) * 1000 / (n1 - n0)
                    print(f"  {b:<6} per container: stats {stats_ms:5.2f} ms = listing (as `ps`) {ps_ms:5.2f} ms"
                          f" + sampling {stats_ms - ps_ms:5.2f} ms")
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
