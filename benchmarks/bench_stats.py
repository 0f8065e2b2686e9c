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
import json
import os
import shutil
import sys

from benchlab import (
    Population,
    Timing,
    bench_env,
    cman_command,
    compile_checkout,
    interrupts_as_exceptions,
    measure,
    reachable_engines,
    running_monitor,
)


class Bench:
    def __init__(self, pop: Population, rounds: int) -> None:
        self.pop = pop
        self.backends = pop.engines
        self.rounds = rounds
        self.env = pop.env

    def grow_to(self, total: int) -> None:
        """Round-robin over the backends: the first ones get the remainder."""
        n = len(self.backends)
        self.pop.grow({b: total // n + (1 if i < total % n else 0) for i, b in enumerate(self.backends)})

    # -- measurements --

    def cman_stats(self, backend: str | None = None) -> tuple[float, float, int]:
        t = measure(self.pop.c("stats", "--no-stream", "--no-monitor", "--json", backend=backend), self.env, self.rounds)
        return t.wall, t.cpu, len(json.loads(t.stdout))

    def cman_ps(self, backend: str) -> float:
        """CPU of `cman --backend B ps`: start-up plus the backend's listing, without sampling."""
        return measure(self.pop.c("ps", backend=backend), self.env, self.rounds).cpu

    def docker_stats(self) -> tuple[float, int] | None:
        if "docker" not in self.backends or shutil.which("docker") is None:
            return None
        t = measure(["docker", "stats", "--no-stream"], self.env, self.rounds, warm=False)
        return t.wall, len(t.stdout.splitlines()) - 1

    def floor(self) -> Timing:
        return measure(self.pop.c("--version"), self.env, max(5, self.rounds))

    def monitor_path(self, expected: int) -> tuple[float, float, float, int]:
        """(median wall, median CPU of `stats` via the monitor, monitor CPU per pass, rows)."""
        with running_monitor(self.pop.cman, self.env) as mon:
            mon.wait_for(self.pop.prefix, expected, timeout=60)
            t = measure(self.pop.c("stats", "--no-stream", "--json"), mon.env, max(5, self.rounds))
            rows = json.loads(t.stdout)
            if not all(r["sampled_by"] == "monitor" for r in rows):
                print("  (warning: the monitor did not answer; figures are of direct sampling)")
            return t.wall, t.cpu, mon.cost(5).cpu_per_pass, len(rows)


def report(bench: Bench, counts: list[int], floor_cpu: float) -> None:
    """Grow to each count and print its figures, then the marginal costs."""
    pop, backends = bench.pop, bench.backends
    results: list[tuple[int, float]] = []
    per_backend: dict[str, list[tuple[int, float, float]]] = {b: [] for b in backends}  # (rows, stats CPU, ps CPU)
    pop.prepare_images()
    for n in counts:
        bench.grow_to(n)
        spread = ", ".join(f"{b} {pop.count(b)}" for b in backends)
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
        m_wall, m_cpu, m_pass, m_rows = bench.monitor_path(pop.count())
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
        for b, series in per_backend.items():
            (n0, s0, p0), (n1, s1, p1) = series[0], series[-1]
            if n1 > n0:
                stats_ms, ps_ms = (s1 - s0) * 1000 / (n1 - n0), (p1 - p0) * 1000 / (n1 - n0)
                print(f"  {b:<6} per container: stats {stats_ms:5.2f} ms = listing (as `ps`) {ps_ms:5.2f} ms"
                      f" + sampling {stats_ms - ps_ms:5.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="20,100", help="container counts, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", default="", help="default: every reachable one of docker, lxd, lxc")
    ap.add_argument("--cman", default="", help="cman command (default: python -m cman from the checkout)")
    args = ap.parse_args()
    cman, env = cman_command(args.cman), bench_env()
    compile_checkout(env)
    backends = reachable_engines(cman, env, args.backends)
    if not backends:
        print("no reachable backend")
        return 1
    counts = sorted(int(c) for c in args.counts.split(","))
    pop = Population.new(cman, env, "stats", backends)
    bench = Bench(pop, args.rounds)
    print(f"cman: {' '.join(cman)}  python {sys.version.split()[0]}  backends: {', '.join(backends)}  "
          f"CPUs: {os.cpu_count()}  rounds: {args.rounds} (medians)  load: {os.getloadavg()[0]:.2f}")
    floor = bench.floor()
    print(f"start-up floor (`cman --version`): wall {floor.wall * 1000:.0f} ms, CPU {floor.cpu * 1000:.0f} ms\n")
    try:
        with interrupts_as_exceptions():
            report(bench, counts, floor.cpu)
    except KeyboardInterrupt:
        print("interrupted: removing what was made", file=sys.stderr)
        return 130
    finally:
        pop.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
