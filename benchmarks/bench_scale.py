#!/usr/bin/env python3
"""cman at scale (issue 10): `ps`, `stats --no-stream` and the monitor as the container count grows.

    python benchmarks/bench_scale.py [--counts 60,150,300] [--rounds 3] [--lxd-max 40]
                                     [--backends docker,lxd,lxc] [--monitor-passes 10]

For each count it grows one population of running busybox containers (prefix
cmanbench-scale-XXXXXX): LXD gets a third of the count up to --lxd-max, Docker
(local/busybox:latest) and LXC (the busybox rootfs imported with `cman image import`)
share the rest. At each count it prints, side by side in one run, medians of --rounds:

- `cman ps -a` over every engine against `docker ps -a` (target <= 0.35 s at 120 containers);
- `cman --backend lxd ps -a` against `lxc list --format json` (target <= 0.8x);
- `cman --backend docker ps -a` against `docker ps -a` (target <= 5x, start-up bound);
- `cman stats --no-stream --no-monitor --json` wall minus its 1 s interval (target <= +0.15 s),
  its CPU, and `docker stats --no-stream` for Docker's share;
- a `cman monitor` with a 1 s interval: its own CPU per sample (/proc/PID/stat over
  --monitor-passes passes, every thread), per container, and `cman stats --no-stream --json`
  answered by it (target <= 0.1 s at 300);

then the marginal costs per container between counts (the monitor's CPU per sample:
target <= 0.2 ms). The counts include other running containers cman manages on the host
(the rows each command reports). Before each growth it checks that the host's available
memory stays above --mem-reserve-gb, and stops growing where it would not.

Figures only, no asserts. Everything it creates is removed at the end, also on failure or
Ctrl-C, and the monitor is stopped by its PID. It runs the checkout's cman (`python -m cman`
from the repo root) unless --cman is given.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from dataclasses import dataclass

from benchlab import (
    Passes,
    Population,
    Timing,
    bench_env,
    cman_command,
    compile_checkout,
    host_line,
    interrupts_as_exceptions,
    measure,
    mem_available_mb,
    reachable_engines,
    running_monitor,
)

INTERVAL = 1.0
PS_TARGET_S, PS_TARGET_AT = 0.35, 120
LXD_RATIO_TARGET = 0.8
DOCKER_RATIO_TARGET = 5.0
STATS_OVER_TARGET_S = 0.15
MONITOR_MARGINAL_TARGET_MS = 0.2
VIA_MONITOR_TARGET_S, VIA_MONITOR_AT = 0.1, 300
STATS_MARGINAL_TARGET_MS = 1.0
FIRST_GUESS_MB = 16
"""Memory per container assumed before the first growth has been measured."""


def split(total: int, engines: list[str], lxd_max: int) -> dict[str, int]:
    """Containers per engine: LXD a fair share up to ``lxd_max``, the others the rest evenly."""
    others = [e for e in engines if e != "lxd"]
    lxd = 0
    if "lxd" in engines:
        lxd = min(lxd_max, total // len(engines)) if others else min(lxd_max, total)
    want = {"lxd": lxd} if "lxd" in engines else {}
    rest = total - lxd
    for i, e in enumerate(others):
        want[e] = rest // len(others) + (1 if i < rest % len(others) else 0)
    return want


@dataclass(frozen=True)
class Figures:
    """What one count measured; rows are what each command itself reported."""

    count: int
    ps_all: Timing
    ps_rows: int
    docker_ps: Timing | None
    ps_lxd: Timing | None
    lxc_list: Timing | None
    ps_docker: Timing | None
    stats: Timing
    stats_rows: int
    docker_stats: Timing | None
    monitor: Passes
    via_monitor: Timing
    via_rows: int
    via_ok: bool


class Scale:
    def __init__(self, pop: Population, rounds: int, passes: int) -> None:
        self.pop = pop
        self.rounds = rounds
        self.passes = passes
        self.env = pop.env

    def cman(self, *args: str, backend: str | None = None) -> Timing:
        return measure(self.pop.c(*args, backend=backend), self.env, self.rounds)

    def tool(self, *argv: str) -> Timing | None:
        """A yardstick command, if its tool is installed."""
        return measure(list(argv), self.env, self.rounds) if shutil.which(argv[0]) else None

    def at(self, count: int) -> Figures:
        engines = self.pop.engines
        ps_all = self.cman("ps", "-a")
        docker_ps = self.tool("docker", "ps", "-a") if "docker" in engines else None
        ps_lxd = self.cman("ps", "-a", backend="lxd") if "lxd" in engines else None
        lxc_list = self.tool("lxc", "list", "--format", "json") if "lxd" in engines else None
        ps_docker = self.cman("ps", "-a", backend="docker") if "docker" in engines else None
        stats = self.cman("stats", "--no-stream", "--no-monitor", "--json", "--interval", f"{INTERVAL:g}")
        docker_stats = self.tool("docker", "stats", "--no-stream") if "docker" in engines else None
        with running_monitor(self.pop.cman, self.env, INTERVAL) as mon:
            if not mon.wait_for(self.pop.prefix, self.pop.count()):
                print("  (warning: the monitor did not sample every container within 120 s)")
            mon.next_pass(mon.next_pass(0.0)[0])  # a warm-up pass
            cost = mon.cost(self.passes)
            via = measure(self.pop.c("stats", "--no-stream", "--json"), mon.env, max(5, self.rounds))
        via_rows = json.loads(via.stdout)
        return Figures(count, ps_all, max(0, len(ps_all.stdout.splitlines()) - 1), docker_ps, ps_lxd, lxc_list, ps_docker,
                       stats, len(json.loads(stats.stdout)), docker_stats, cost, via, len(via_rows),
                       all(r.get("sampled_by") == "monitor" for r in via_rows))


def ratio(a: Timing | None, b: Timing | None) -> str:
    return f"{a.wall / b.wall:5.2f}x" if a and b and b.wall > 0 else "  n/a"


def show(f: Figures, spread: str) -> None:
    ms = 1000.0
    print(f"== {f.count} containers ({spread}); cman ps -a lists {f.ps_rows}, stats samples {f.stats_rows}")
    print(f"   {host_line()}")
    dps = f"docker ps -a {f.docker_ps.wall:6.3f} s" if f.docker_ps else ""
    print(f"  cman ps -a (every engine)        {f.ps_all.wall:6.3f} s (CPU {f.ps_all.cpu * ms:4.0f} ms)   {dps}"
          f"   (target: <= {PS_TARGET_S} s at {PS_TARGET_AT} containers)")
    if f.ps_lxd:
        yard = f"lxc list --format json {f.lxc_list.wall:6.3f} s" if f.lxc_list else "lxc: not installed"
        print(f"  cman --backend lxd ps -a         {f.ps_lxd.wall:6.3f} s (CPU {f.ps_lxd.cpu * ms:4.0f} ms)   {yard}"
              f"   {ratio(f.ps_lxd, f.lxc_list)}"
              f" (target <= {LXD_RATIO_TARGET}x)")
    if f.ps_docker:
        print(f"  cman --backend docker ps -a      {f.ps_docker.wall:6.3f} s (CPU {f.ps_docker.cpu * ms:4.0f} ms)   {dps}"
              f"   {ratio(f.ps_docker, f.docker_ps)}"
              f" (target <= {DOCKER_RATIO_TARGET:g}x)")
    over = f.stats.wall - INTERVAL
    print(f"  cman stats --no-stream --no-monitor  wall {f.stats.wall:6.3f} s = interval + {over:5.3f} s"
          f" (target <= +{STATS_OVER_TARGET_S} s); CPU {f.stats.cpu * ms:6.1f} ms"
          f" = {f.stats.cpu * ms / max(1, f.stats_rows):5.2f} ms/container")
    if f.docker_stats:
        rows = max(0, len(f.docker_stats.stdout.splitlines()) - 1)
        print(f"  docker stats --no-stream             wall {f.docker_stats.wall:6.3f} s ({rows} Docker containers)"
              f"   cman/docker wall {ratio(f.stats, f.docker_stats)}")
    m = f.monitor
    print(f"  monitor's own CPU per 1 s sample     {m.cpu_per_pass * ms:6.1f} ms over {m.passes} passes"
          f" = {m.cpu_per_pass * ms / max(1.0, m.rows):5.3f} ms/container ({m.rows:.0f} sampled)")
    print(f"    of which the sampling pass (main thread) {m.main_per_pass * ms:6.1f} ms,"
          f" listings and HTTP server (other threads) {(m.cpu_per_pass - m.main_per_pass) * ms:6.1f} ms")
    note = "" if f.via_ok else "  (warning: not answered by the monitor)"
    print(f"  cman stats --no-stream via monitor   wall {f.via_monitor.wall:6.3f} s, CPU {f.via_monitor.cpu * ms:5.0f} ms,"
          f" {f.via_rows} rows (target <= {VIA_MONITOR_TARGET_S} s at {VIA_MONITOR_AT}){note}")
    print()


def interpolate(points: list[tuple[int, float]], at: int) -> float | None:
    """Linear interpolation of (rows, value) at ``at`` rows, None outside the measured range."""
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= at <= x1 and x1 > x0:
            return y0 + (y1 - y0) * (at - x0) / (x1 - x0)
    return None


def summary(results: list[Figures]) -> None:
    ms = 1000.0
    print("== as a function of the count (rows each command reported)")
    print("  count  ps-a rows  ps -a wall  ps -a CPU   stats wall  stats CPU   monitor rows  monitor CPU/sample  via-monitor wall")
    for f in results:
        print(f"  {f.count:5d}  {f.ps_rows:9d}  {f.ps_all.wall:8.3f} s  {f.ps_all.cpu * ms:6.1f} ms  {f.stats.wall:8.3f} s  {f.stats.cpu * ms:6.1f} ms"
              f"  {f.monitor.rows:12.0f}  {f.monitor.cpu_per_pass * ms:15.1f} ms  {f.via_monitor.wall:13.3f} s")
    at = interpolate([(f.ps_rows, f.ps_all.wall) for f in results], PS_TARGET_AT)
    if at is not None:
        print(f"  cman ps -a at {PS_TARGET_AT} containers (interpolated): {at:.3f} s (target <= {PS_TARGET_S} s)")
    print("== marginal cost per container between counts")
    pairs = list(itertools.pairwise(results))
    if len(results) > 2:
        pairs.append((results[0], results[-1]))
    for a, b in pairs:
        drows = b.monitor.rows - a.monitor.rows
        mon = (b.monitor.cpu_per_pass - a.monitor.cpu_per_pass) * ms / drows if drows > 0 else float("nan")
        srows = b.stats_rows - a.stats_rows
        stats = (b.stats.cpu - a.stats.cpu) * ms / srows if srows > 0 else float("nan")
        prows = b.ps_rows - a.ps_rows
        ps = (b.ps_all.cpu - a.ps_all.cpu) * ms / prows if prows > 0 else float("nan")
        main = (b.monitor.main_per_pass - a.monitor.main_per_pass) * ms / drows if drows > 0 else float("nan")
        print(f"  {a.count:4d} -> {b.count:4d}: monitor CPU per sample {mon:6.3f} ms (target <= {MONITOR_MARGINAL_TARGET_MS} ms;"
              f" sampling pass {main:5.3f} ms + listings {mon - main:5.3f} ms);"
              f" stats --no-monitor CPU {stats:5.2f} ms (<= {STATS_MARGINAL_TARGET_MS:g} ms); ps -a CPU {ps:5.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--counts", default="60,150,300", help="container counts, comma-separated")
    ap.add_argument("--rounds", type=int, default=3, help="runs per measurement (medians)")
    ap.add_argument("--lxd-max", type=int, default=40, help="at most this many LXD instances")
    ap.add_argument("--backends", default="", help="default: every reachable one of docker, lxd, lxc")
    ap.add_argument("--monitor-passes", type=int, default=10, help="monitor passes (1 s each) per CPU reading")
    ap.add_argument("--mem-reserve-gb", type=float, default=2.0, help="stop growing before available memory falls below")
    ap.add_argument("--workers", type=int, default=4, help="containers created at once")
    ap.add_argument("--cman", default="", help="cman command (default: python -m cman from the checkout)")
    args = ap.parse_args()
    try:
        counts = sorted({int(c) for c in args.counts.split(",")})
    except ValueError:
        ap.error(f"--counts: not a list of numbers: {args.counts}")
    if not counts or counts[0] < 1 or args.rounds < 1 or args.monitor_passes < 1 or args.lxd_max < 0 or args.workers < 1:
        ap.error("counts, --rounds, --monitor-passes and --workers must be >= 1, --lxd-max >= 0")
    cman, env = cman_command(args.cman), bench_env()
    compile_checkout(env)
    engines = reachable_engines(cman, env, args.backends)
    if not engines:
        print("no reachable backend", file=sys.stderr)
        return 1
    pop = Population.new(cman, env, "scale", engines)
    pop.workers = args.workers
    bench = Scale(pop, args.rounds, args.monitor_passes)
    print(f"cman: {' '.join(cman)}  python {sys.version.split()[0]}  engines: {', '.join(engines)}  "
          f"rounds: {args.rounds} (medians)  prefix: {pop.prefix}")
    print(f"{host_line()}\n")
    results: list[Figures] = []
    per_container_mb = float(FIRST_GUESS_MB)
    try:
        with interrupts_as_exceptions():
            floor = measure(pop.c("--version"), env, max(5, args.rounds))
            print(f"start-up floor (`cman --version`): wall {floor.wall * 1000:.0f} ms, CPU {floor.cpu * 1000:.0f} ms\n")
            pop.prepare_images()
            for count in counts:
                have, free_mb = pop.count(), mem_available_mb()
                fits = have + int((free_mb - args.mem_reserve_gb * 1024) / per_container_mb)
                capped = fits < count
                target = max(have, min(count, fits))
                if target <= have and have > 0 and capped:
                    print(f"stopping: {count} containers would leave less than {args.mem_reserve_gb:g} GB available")
                    break
                want = split(target, engines, args.lxd_max)
                pop.grow(want)
                if pop.count() > have:
                    per_container_mb = max(1.0, (free_mb - mem_available_mb()) / (pop.count() - have))
                spread = ", ".join(f"{e} {pop.count(e)}" for e in engines)
                if capped:
                    print(f"(memory: {count} would not fit above {args.mem_reserve_gb:g} GB available; grew to {target})")
                print(f"(grown to {target}; about {per_container_mb:.1f} MB of host memory per container)")
                results.append(bench.at(target))
                show(results[-1], spread)
                if capped:
                    break
            if results:
                summary(results)
    except KeyboardInterrupt:
        print("interrupted: removing what was made", file=sys.stderr)
        return 130
    finally:
        pop.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
