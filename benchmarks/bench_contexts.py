#!/usr/bin/env python3
"""Many hosts: Docker over ssh against the docker CLI, and ``ps --context all`` against the
sum of the single-context listings. Whole-process wall times, alternated, medians.

    python benchmarks/bench_contexts.py [--rounds 9]      (root: a private sshd, a second dockerd)

1. ``cman --backend docker ps`` with DOCKER_HOST=ssh://ALIAS against ``docker -H ssh://ALIAS ps``
   (target: within 1.5x). ALIAS is a private sshd on loopback (tests/integration/contextlab.py),
   so the ssh handshake is real and the network is not.
2. ``cman --context all ps -a`` over five contexts (this Docker, a second dockerd, Docker over
   ssh, LXD's socket, LXC) against the sum of ``cman --context C ps -a`` for each: the
   contexts are asked at once, so the wall time should be near the slowest one, not the sum.

Not a test: figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.contextlab import second_dockerd, ssh_alias  # noqa: E402

IMAGE = "local/busybox:latest"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}")
    return time.perf_counter() - start


def medians(commands: dict[str, list[str]], rounds: int, env: dict[str, str]) -> dict[str, float]:
    """Each command once to warm up, then ``rounds`` alternated runs; the median of each."""
    times: dict[str, list[float]] = {k: [] for k in commands}
    for argv in commands.values():
        timed(argv, env)
    for _ in range(rounds):
        for key, argv in commands.items():
            times[key].append(timed(argv, env))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    cman = [sys.executable, "-m", "cman"]
    docker = shutil.which("docker") or "docker"
    env = {k: v for k, v in os.environ.items() if k not in ("CMAN_BACKEND", "CMAN_CONTEXT", "DOCKER_HOST")}
    env["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="cmanbench-config-")
    print(f"python {sys.version.split()[0]}  rounds {args.rounds}  (medians, whole process)")
    try:
        with ssh_alias() as alias, second_dockerd(image=IMAGE) as second:
            host = f"ssh://{alias}"
            t = medians({"cman": [*cman, "--backend", "docker", "ps"], "docker": [docker, "-H", host, "ps"]},
                        args.rounds, {**env, "DOCKER_HOST": host})
            ratio = t["cman"] / t["docker"]
            print(f"{'ps over ssh (one kept ssh stream)':<40} cman {t['cman'] * 1000:7.1f} ms   "
                  f"docker -H ssh:// {t['docker'] * 1000:7.1f} ms   ratio {ratio:4.2f}x (target <= 1.5x) "
                  f"{'OK' if ratio <= 1.5 else 'OVER TARGET'}")

            contexts = {
                "local": ["--docker", "unix:///var/run/docker.sock"],
                "second": ["--docker", second.url],
                "ssh": ["--docker", host],
                "lxd": ["--lxd", "unix:///var/lib/lxd/unix.socket"],
                "lxc": ["--lxc"],
            }
            for name, how in contexts.items():
                subprocess.run([*cman, "context", "create", name, *how], env=env, check=True, capture_output=True)
            commands = {name: [*cman, "--context", name, "ps", "-a"] for name in contexts}
            commands["all"] = [*cman, "--context", "all", "ps", "-a"]
            t = medians(commands, args.rounds, env)
            singles = {k: v for k, v in t.items() if k != "all"}
            for name, value in singles.items():
                print(f"  --context {name:<8} ps -a {value * 1000:7.1f} ms")
            total, slowest = sum(singles.values()), max(singles.values())
            print(f"{'ps -a --context all (5 contexts)':<40} all {t['all'] * 1000:7.1f} ms   "
                  f"sum of singles {total * 1000:7.1f} ms ({t['all'] / total:4.2f}x)   "
                  f"slowest single {slowest * 1000:7.1f} ms ({t['all'] / slowest:4.2f}x)")
    finally:
        shutil.rmtree(env["XDG_CONFIG_HOME"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
