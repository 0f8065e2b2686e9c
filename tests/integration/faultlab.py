"""The machinery of the kill suite (test_faults_kill.py): one :class:`Lab` per engine that sets up
what its operations need, runs each operation once to time it, then SIGKILLs it at random
delays, and knows what of its work it still owns afterwards.

A kill is real only when the process was still running (it died of our SIGKILL, exit -9);
an operation that finished first does not count, and the next delays get shorter. Every
cman process the lab starts is recorded (its PID marks its temporary files, see
:mod:`.hoststate`), and reaped at once: a zombie would still look alive to ``system prune``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import hoststate
from .hoststate import Scope

OPS = ("run --rm", "run -d", "network create", "network rm", "image import", "pull")
LETTER = {"docker": "d", "lxd": "x", "lxc": "c"}
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
JOB_MARK = "began"
"""What a ``run -d`` job prints first: a container whose logs lack it never began its job."""
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def cman_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CMAN_BACKEND"}
    env.update(extra or {})
    return env


@dataclass
class OpStats:
    measured: float = 0.0
    """Seconds the operation took once, not killed."""
    attempts: int = 0
    kills: int = 0
    finished_first: int = 0
    delays: list[float] = field(default_factory=list)
    took: float = 0.0
    """Seconds the whole campaign of the operation took."""


@dataclass
class Owned:
    """What the lab made and may keep: names of containers, networks and images."""

    containers: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    images: set[str] = field(default_factory=set)


class Lab:
    """One engine's share of the campaign; its methods run in one thread."""

    def __init__(self, name: str, prefix: str, net_prefix: str, scope: Scope, rng: random.Random,
                 workdir: Path, kills: int) -> None:
        self.name = name
        self.letter = LETTER[name]
        self.prefix = prefix
        self.net_prefix = net_prefix
        self.scope = scope
        self.rng = rng
        self.workdir = workdir
        self.kills = kills
        self.env: dict[str, str] = {}
        self.image = f"{prefix}-kbb"
        self.run_net = f"{net_prefix}{self.letter}n0"
        self.stats = {op: OpStats() for op in OPS}
        self.owned = Owned()
        self.made_networks: set[str] = set()
        self.made_images: set[str] = set()
        self.made_containers: set[str] = set()
        self.pull_ref = ""
        self.pull_env: dict[str, str] = {}
        self.pull_absent: Callable[[], None] = lambda: None
        self.import_tarball = Path()
        self.shapes: dict[str, dict[str, int]] = {}
        """Reference shape of a whole network made by an uninterrupted create (kind -> count)."""
        self.errors: list[str] = []
        self._lock = threading.Lock()

    # -- running cman ------------------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cman", "--backend", self.name, *args]

    def cli(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.Popen(self.argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=cman_env({**self.env, **(env or {})}))
        self.scope.pids.add(proc.pid)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def must(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = self.cli(*args, env=env)
        if proc.returncode != 0:
            raise AssertionError(f"{self.name}: cman {' '.join(args)} -> {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def timed(self, *args: str, env: dict[str, str] | None = None) -> float:
        started = time.monotonic()
        self.must(*args, env=env)
        return time.monotonic() - started

    def kill_after(self, delay: float, *args: str, env: dict[str, str] | None = None) -> bool:
        """Start cman ARGS and SIGKILL it after ``delay`` seconds; True when it was killed
        (False: it had finished). Its children live on, as after a ``kill -9`` by a user."""
        proc = subprocess.Popen(self.argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=cman_env({**self.env, **(env or {})}),
                                start_new_session=True)
        self.scope.pids.add(proc.pid)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        return proc.returncode == -signal.SIGKILL

    # -- the campaign ------------------------------------------------------------------------

    def campaign(self, op: str, measure: Callable[[], float], prep: Callable[[int], list[str]],
                 env: dict[str, str] | None = None) -> None:
        """Time ``op`` once, then kill it until ``self.kills`` kills landed (at most 36 tries:
        names take one base-36 digit). ``prep(i)`` readies try ``i`` and returns its argv."""
        stats = self.stats[op]
        started = time.monotonic()
        stats.measured = measure()
        low, high = 0.05, max(stats.measured, 0.3)
        while stats.kills < self.kills and stats.attempts < len(DIGITS):
            argv = prep(stats.attempts)
            stats.attempts += 1
            delay = self.rng.uniform(low, high)
            stats.delays.append(delay)
            if self.kill_after(delay, *argv, env=env):
                stats.kills += 1
            else:
                stats.finished_first += 1
                high = max(low + 0.05, high * 0.8)
        stats.took = time.monotonic() - started

    def name_of(self, tag: str, i: int) -> str:
        return f"{self.prefix}-{self.letter}{tag}{i:02d}"

    def net_of(self, tag: str, i: int) -> str:
        return f"{self.net_prefix}{self.letter}{tag}{DIGITS[i]}"

    # -- set-up --------------------------------------------------------------------------------

    def setup(self, rootfs: Path, variant: Callable[[Path, str], Path]) -> None:
        if self.name == "lxc":
            store = self.workdir / "lxc-images"
            store.mkdir(parents=True, exist_ok=True)
            self.env["CMAN_LXC_IMAGES"] = str(store)
        self.must("image", "import", str(rootfs), self.image)
        self.made_images.add(self.image)
        self.must("network", "create", self.run_net)
        self.made_networks.add(self.run_net)
        self.import_tarball = variant(self.workdir / "import.tar.gz", f"{self.prefix}-{self.name}-import")

    def shape(self, network: str, snap: hoststate.Snapshot | None = None) -> dict[str, int]:
        """Kinds of host items that belong to ``network`` (by name or bridge), counted."""
        snap = snap or hoststate.snapshot(self.scope, [self.name])
        nets = [i for i in snap.items.values() if i.kind.endswith(" network") and i.key == network]
        names = {network, *(r for i in nets for r in i.refs)}
        shape: dict[str, int] = {}
        for item in snap.items.values():
            if item.kind in ("lxc lease",) or item.kind.endswith("container") or item.kind.endswith("image"):
                continue
            if hoststate.owned_by(item, names) and not (item.kind == "link" and "master" in item.detail):
                shape[item.kind] = shape.get(item.kind, 0) + 1
        return shape

    # -- the six operations ----------------------------------------------------------------------

    def containers_and_images(self) -> None:
        """One half of the campaign (the other half runs beside it, in another thread)."""
        self.campaign("run --rm", self._measure_run_rm, self._prep_run_rm)
        self.campaign("run -d", self._measure_run_d, self._prep_run_d)
        self.campaign("image import", self._measure_import, self._prep_import)

    def networks_and_pulls(self) -> None:
        self.campaign("network create", self._measure_net_create, self._prep_net_create)
        self.campaign("network rm", self._measure_net_rm, self._prep_net_rm)
        self.campaign("pull", self._measure_pull, self._prep_pull, env=self.pull_env)

    def _run_rm_args(self, name: str) -> list[str]:
        return ["run", "--rm", "--name", name, "--network", self.run_net, self.image, "sleep", "1"]

    def _measure_run_rm(self) -> float:
        return self.timed(*self._run_rm_args(self.name_of("rmm", 0)))

    def _prep_run_rm(self, i: int) -> list[str]:
        return self._run_rm_args(self.name_of("rm", i))

    def _run_d_args(self, name: str) -> list[str]:
        self.made_containers.add(name)
        return ["run", "-d", "--name", name, "--network", self.run_net, self.image,
                "sh", "-c", f"echo {JOB_MARK}; exec sleep 900"]

    def _measure_run_d(self) -> float:
        name = self.name_of("rdm", 0)
        took = self.timed(*self._run_d_args(name))
        self.must("rm", "-f", name)
        return took

    def _prep_run_d(self, i: int) -> list[str]:
        return self._run_d_args(self.name_of("rd", i))

    def _measure_net_create(self) -> float:
        name = f"{self.net_prefix}{self.letter}mc"
        self.made_networks.add(name)
        took = self.timed("network", "create", name, "--no-icc")
        self.shapes["--no-icc"] = self.shape(name)
        self.must("network", "rm", name)
        return took

    def _prep_net_create(self, i: int) -> list[str]:
        name = self.net_of("c", i)
        self.made_networks.add(name)
        return ["network", "create", name, "--no-icc"]

    def _measure_net_rm(self) -> float:
        name = f"{self.net_prefix}{self.letter}mr"
        self.made_networks.add(name)
        self.must("network", "create", name, "--no-icc")
        return self.timed("network", "rm", name)

    def _prep_net_rm(self, i: int) -> list[str]:
        name = self.net_of("r", i)
        self.made_networks.add(name)
        self.must("network", "create", name, "--no-icc")
        return ["network", "rm", name]

    def _measure_import(self) -> float:
        name = self.name_of("imm", 0)
        self.made_images.add(name)
        took = self.timed("image", "import", str(self.import_tarball), name)
        if self.name == "docker":  # the layer of the tarball: finds every image made from it, tagged or not
            info = json.loads(subprocess.run(["docker", "image", "inspect", name], capture_output=True, text=True,
                                             check=True).stdout)[0]
            self.scope.docker_layers.update(info["RootFS"]["Layers"])
        self.must("image", "rm", name)
        return took

    def _prep_import(self, i: int) -> list[str]:
        name = self.name_of("im", i)
        self.made_images.add(name)
        return ["image", "import", str(self.import_tarball), name]

    def _measure_pull(self) -> float:
        self.pull_absent()
        took = self.timed("pull", self.pull_ref, env=self.pull_env)
        self.pull_absent()
        return took

    def _prep_pull(self, _i: int) -> list[str]:
        self.pull_absent()
        return ["pull", self.pull_ref]

    # -- afterwards --------------------------------------------------------------------------------

    def job_began(self, name: str) -> bool:
        proc = self.cli("logs", name)
        return proc.returncode == 0 and JOB_MARK in proc.stdout

    def judge(self, snap: hoststate.Snapshot) -> Verdict:
        """What of the lab's work is still there after prune, and whether it is whole.

        A network that the engine has is the user's. Its host parts (bridge, rules) are not
        persistent (a reboot drops them too) and cman puts them back at the next start on the
        network, so a network that lacks some is started on once (``run --rm``) and must
        then be whole. A ``run -d`` container is the user's once its job began; one whose
        job never began is a leftover that prune should have removed."""
        verdict = Verdict()
        want = self.shapes.get("--no-icc")
        for net in sorted(self.made_networks):
            item = snap.items.get((f"{self.name} network", net))
            if item is None:
                continue
            verdict.owned.update(item.refs)
            shape = self.shape(net, snap)
            if net == self.run_net or want is None or shape == want:
                continue
            # `true` ends at once: a container gone before cman finds its port must not fail.
            proc = self.cli("run", "--rm", "--network", net, self.image, "true")
            healed = self.shape(net)
            line = f"{self.name}: network {net} had {shape}, a whole one has {want}"
            if proc.returncode == 0 and healed == want:
                verdict.healed.append(f"{line}: the next start on it made it whole")
            else:
                verdict.half_made.append(f"{line}; after a start on it ({proc.returncode} {proc.stderr.strip()!r}):"
                                         f" {healed}")
        for name in sorted(self.made_containers):
            item = snap.items.get((f"{self.name} container", name))
            if item is None:
                continue
            if self.job_began(name):
                verdict.owned.add(name)
            else:
                verdict.half_made.append(f"{self.name}: container {name} ({item.detail}) never began its job:"
                                         " its run -d was killed between the boot and the job, and prune kept it")
        verdict.owned.update(self.made_images)
        return verdict

    def remove_owned(self, snap: hoststate.Snapshot) -> list[str]:
        """The next cman commands remove what the lab owns (containers, networks, then
        images); each must work. Returns the failures."""
        steps: list[tuple[tuple[str, ...], dict[str, str] | None, tuple[int, ...]]] = []
        steps += [(("rm", "-f", n), None, (0,)) for n in sorted(self.made_containers)
                  if (f"{self.name} container", n) in snap.items]
        steps += [(("network", "rm", n), None, (0,)) for n in sorted(self.made_networks)
                  if (f"{self.name} network", n) in snap.items]
        steps += [(("image", "rm", i), self.pull_env if i in (self.pull_ref, *self.scope.lxd_fingerprints) else None,
                   (0, 3)) for i in sorted(self.made_images)]
        failures = []
        for argv, env, codes in steps:
            proc = self.cli(*argv, env=env)
            if proc.returncode not in codes:
                failures.append(f"{self.name}: cman {' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
        return failures

    def report(self) -> list[str]:
        rows = []
        for op, s in self.stats.items():
            rows.append(f"{self.name:6} {op:15} measured {s.measured:5.2f}s  tries {s.attempts:2}  "
                        f"kills {s.kills:2}  finished first {s.finished_first:2}  ({s.took:.0f} s)")
        return rows


@dataclass
class Verdict:
    owned: set[str] = field(default_factory=set)
    half_made: list[str] = field(default_factory=list)
    healed: list[str] = field(default_factory=list)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def in_threads(jobs: dict[str, Callable[[], None]]) -> dict[str, BaseException]:
    """Run each job in its own thread; the exceptions by job name."""
    failures: dict[str, BaseException] = {}

    def wrap(name: str, job: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                job()
            except BaseException as err:  # reported by the caller
                failures[name] = err
        return run

    threads = [threading.Thread(target=wrap(n, j), name=f"kill-{n}") for n, j in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


# -- the registry (Docker pull) --------------------------------------------------------------------


def registry_delete(registry: str, repo: str, tag: str = "latest") -> None:
    """Delete a manifest of the test's own repository (the registry keeps the blobs)."""
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}", method="HEAD",
                                 headers={"Accept": accept})
    with contextlib.suppress(OSError), NO_PROXY.open(req, timeout=10) as resp:
        digest = resp.headers.get("Docker-Content-Digest")
        if digest:
            NO_PROXY.open(urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{digest}",
                                                 method="DELETE"), timeout=10).close()


@contextlib.contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as tmp:
        yield Path(tmp)
