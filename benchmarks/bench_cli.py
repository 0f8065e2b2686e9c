#!/usr/bin/env python3
"""Whole-process wall time of cman against the docker CLI, alternated in one run.

    python benchmarks/bench_cli.py [--rounds 15] [--containers 20]

Prints median wall times and the ratios the core issue targets:
run at most 1.5x `docker run --rm`, ps at most 12x `docker ps -a` with 20 containers.
Not a test: figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time

IMAGE = "local/busybox:latest"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - start


def alternate(a: list[str], b: list[str], rounds: int, env: dict[str, str]) -> tuple[float, float]:
    ta: list[float] = []
    tb: list[float] = []
    timed(a, env), timed(b, env)  # warm caches for both
    for _ in range(rounds):
        ta.append(timed(a, env))
        tb.append(timed(b, env))
    return statistics.median(ta), statistics.median(tb)


def report(label: str, cman_t: float, docker_t: float, target: float) -> None:
    ratio = cman_t / docker_t
    verdict = "OK" if ratio <= target else "OVER TARGET"
    print(f"{label:<34} cman {cman_t * 1000:7.1f} ms   docker {docker_t * 1000:7.1f} ms   "
          f"ratio {ratio:5.2f}x (target <= {target}x) {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--cman", default=shutil.which("cman") or "cman")
    ap.add_argument("--docker", default=shutil.which("docker") or "docker")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "CMAN_BACKEND"}
    cman = [args.cman, "--backend", "docker"]
    docker = [args.docker]
    print(f"cman: {args.cman}  docker: {args.docker}  python: {sys.version.split()[0]}  rounds: {args.rounds}")

    c, d = alternate([*cman, "run", "--rm", IMAGE, "true"], [*docker, "run", "--rm", IMAGE, "true"], args.rounds, env)
    report("run --rm IMAGE true", c, d, 1.5)

    prefix = f"cmanbench-{secrets.token_hex(3)}"
    names = [f"{prefix}-{i}" for i in range(args.containers)]
    try:
        for name in names:
            subprocess.run([*docker, "run", "-d", "--name", name, IMAGE, "sleep", "600"],
                           stdout=subprocess.DEVNULL, check=True)
        c, d = alternate([*cman, "ps", "-a"], [*docker, "ps", "-a"], args.rounds * 2, env)
        report(f"ps -a ({args.containers} containers)", c, d, 12)
        c_all, d = alternate([args.cman, "ps", "-a"], [*docker, "ps", "-a"], args.rounds, env)
        report("ps -a, every reachable backend", c_all, d, 12)
    finally:
        subprocess.run([*docker, "rm", "-f", *names], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
