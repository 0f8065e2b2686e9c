#!/usr/bin/env python3
"""OCI pulls: LXC pull + run of a cached registry image against ``docker run --rm``, and the
re-pull of an unchanged image on every engine, alternated in one run.

    python benchmarks/bench_oci.py [--rounds 7] [--image 127.0.0.1:5000/cman/configured:latest]

Targets (issue 11): ``cman --backend lxc pull IMAGE && cman --backend lxc run --rm IMAGE true``
within 1.5x ``docker run --rm IMAGE true``; a re-pull of an unchanged image under 1 s on each
engine. Needs scripts/setup-engines.sh's registry images. Figures are printed, never asserted.

cman's bytecode is compiled first (``compileall``, as ``pip install`` does): with
PYTHONDONTWRITEBYTECODE set and no ``__pycache__``, every cman process would compile its
modules again (about 0.1 s each here), which no installed cman does.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time

CMAN = [sys.executable, "-m", "cman"]


def timed(*argvs: list[str]) -> float:
    start = time.perf_counter()
    for argv in argvs:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--image", default="127.0.0.1:5000/cman/configured:latest")
    args = parser.parse_args()
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    compileall.compile_dir("cman", quiet=1)
    image = args.image
    lxc = [[*CMAN, "--backend", "lxc", "pull", image], [*CMAN, "--backend", "lxc", "run", "--rm", image, "true"]]
    docker = [["docker", "run", "--rm", image, "true"]]
    timed(*lxc), timed(*docker)  # warm: the image is pulled and cached on both
    t_lxc: list[float] = []
    t_docker: list[float] = []
    for _ in range(args.rounds):
        t_lxc.append(timed(*lxc))
        t_docker.append(timed(*docker))
    a, b = statistics.median(t_lxc), statistics.median(t_docker)
    print(f"lxc pull + run --rm true   {a:6.3f} s   docker run --rm true  {b:6.3f} s   ratio {a / b:4.2f}x"
          "  (target <= 1.5x)")
    for backend in ("docker", "lxd", "lxc"):
        pull = [*CMAN, "--backend", backend, "pull", image]
        timed(pull)
        t = statistics.median(timed(pull) for _ in range(args.rounds))
        print(f"re-pull unchanged ({backend:6}) {t:6.3f} s  (target < 1 s)")


if __name__ == "__main__":
    main()
