"""cman SIGKILLed at random points (issue 13, "cman killed at random points"), on every engine.

Each of ``run --rm``, ``run -d``, ``network create``, ``network rm``, ``image import`` and
``pull`` is timed once, then started again and again and SIGKILLed after a random delay
below its measured duration, until it was killed ``CMAN_FAULT_KILLS`` times (default 20)
on each engine; the engines' campaigns run side by side, one thread each. Then:

1. the run settles (the jobs of killed ``run --rm`` end and the engine removes their
   containers; LXD finishes downloads a killed pull had started);
2. ``cman system prune`` removes what the killed processes left behind;
3. what remains of the run on the host (:mod:`.hoststate`, read with the engines' own tools)
   must be only what the test legitimately owns: the network and image it set up, a
   ``run -d`` container whose job began, a network or image whose create, import or pull
   got through (whole: a network with every part an uninterrupted create makes);
4. the test removes those with the next cman commands (each must work), and the host is
   then exactly as before the test.

Pull sources that work offline: Docker pulls an image of the test's own from the local
registry (127.0.0.1:5000/PREFIX/kpull: a variant of the busybox image, so its layer is
really downloaded and unpacked, and the shared cman/busybox tag other tests use is left
alone); LXD pulls from the HTTPS image server of test_lxd_pull.py (sped up to 1 MiB/s);
raw LXC pulls ``template:busybox`` into a private image store (so the shared store is not
touched). ``CMAN_FAULT_SEED`` replays a campaign; the counts are printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cman.backends import backend_class

from ..conftest import NET_PREFIX, PREFIX, REGISTRY, ROOTFS, require_root, selected_engines, unavailable, variant_rootfs
from . import hoststate
from .faultlab import OPS, Lab, Verdict, cman_env, in_threads, private_dir, registry_delete, wait_until
from .hoststate import Scope, Snapshot

pytestmark = pytest.mark.engine

KILLS = int(os.environ.get("CMAN_FAULT_KILLS", "20"))
SEED = int(os.environ.get("CMAN_FAULT_SEED", str(random.SystemRandom().randrange(1 << 30))))


@dataclass
class Campaign:
    labs: dict[str, Lab]
    scope: Scope
    before: Snapshot
    after_kills: Snapshot | None = None
    after_prune: Snapshot | None = None
    at_end: Snapshot | None = None
    prune_runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    pruned: list[dict[str, object]] = field(default_factory=list)
    """The prune items that are this run's."""
    leftovers: list[str] = field(default_factory=list)
    """What prune left that the test does not own (must be empty)."""
    half_made: list[str] = field(default_factory=list)
    healed: list[str] = field(default_factory=list)
    """Networks that lacked host parts after prune, made whole by the next start on them."""
    cleanup_failures: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    took: float = 0.0


# -- set-up of the pull sources --------------------------------------------------------------------


def _docker_pull_source(lab: Lab, stack: contextlib.ExitStack) -> None:
    repo = f"{PREFIX}/kpull"
    ref = f"{REGISTRY}/{repo}:latest"
    tarball = variant_rootfs(lab.workdir / "pull.tar.gz", f"{PREFIX}-docker-pull")
    for argv in (["docker", "import", str(tarball), ref], ["docker", "push", "-q", ref]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            unavailable(f"the local registry {REGISTRY} takes no push: {proc.stderr.strip()}")
    stack.callback(registry_delete, REGISTRY, repo)
    layers = json.loads(subprocess.run(["docker", "image", "inspect", ref], capture_output=True, text=True,
                                       check=True).stdout)[0]["RootFS"]["Layers"]
    lab.scope.docker_layers.update(layers)
    lab.pull_ref = ref
    lab.made_images.add(ref)

    def absent() -> None:
        proc = lab.cli("image", "rm", ref)
        assert proc.returncode in (0, 3), proc.stderr

    lab.pull_absent = absent
    absent()


def _lxd_pull_source(lab: Lab, stack: contextlib.ExitStack) -> None:
    from . import test_lxd_pull

    patch = stack.enter_context(pytest.MonkeyPatch.context())
    patch.setattr(test_lxd_pull, "RATE", 1024 * 1024)
    folder = lab.workdir / "server"
    folder.mkdir()
    server = stack.enter_context(test_lxd_pull.serve(folder))
    lab.pull_ref = f"{server.remote}:{server.alias}"
    lab.pull_env = server.env()
    lab.scope.lxd_fingerprints.add(server.fingerprint)
    lab.made_images.add(server.fingerprint)

    def absent() -> None:
        wait_until(lambda: not _lxd_downloading(), 60)
        proc = lab.cli("image", "rm", server.fingerprint)
        assert proc.returncode in (0, 3), proc.stderr

    lab.pull_absent = absent
    absent()


def _lxd_downloading() -> bool:
    """Does the daemon still download an image (a killed pull's operation runs on)?"""
    ops = json.loads(subprocess.run(["lxc", "query", "/1.0/operations?recursion=1"], capture_output=True,
                                    text=True, check=True).stdout or "{}")
    return any(o.get("description") == "Downloading image" for o in (ops or {}).get("running") or [])


def _lxc_pull_source(lab: Lab, _stack: contextlib.ExitStack) -> None:
    lab.pull_ref = "template:busybox"
    lab.made_images.add(lab.pull_ref)

    def absent() -> None:
        proc = lab.cli("image", "rm", lab.pull_ref)
        assert proc.returncode in (0, 3), proc.stderr

    lab.pull_absent = absent
    absent()


PULL_SOURCES = {"docker": _docker_pull_source, "lxd": _lxd_pull_source, "lxc": _lxc_pull_source}


# -- the campaign ------------------------------------------------------------------------------------


def _engines() -> list[str]:
    require_root("the kill suite (bridges, iptables, nft, every engine's files)")
    if not ROOTFS.is_file():
        unavailable(f"test rootfs {ROOTFS} is missing: run scripts/setup-engines.sh")
    engines = selected_engines()
    for name in engines:
        status = backend_class(name).probe()
        if not status.reachable:
            unavailable(f"{name}: {status.problem} (fix: {status.fix})")
    down = [n for n in ("docker", "lxd", "lxc") if not backend_class(n).probe().reachable]
    if down:
        unavailable(f"system prune judges host rules only with every engine up; down: {', '.join(down)}")
    return engines


def _settle(c: Campaign) -> None:
    """Let what the killed processes set going finish: the jobs of killed ``--rm`` runs (1 s
    each) end and the engine removes their containers, until the rest has not changed for
    10 s (those never got their job: prune's to remove); LXD finishes downloads; an
    lxc-attach or exec in flight when its cman died has started its job."""
    def rm_containers() -> frozenset[str]:
        snap = hoststate.snapshot(c.scope)
        return frozenset(i.key for i in snap.items.values()
                         if i.kind.endswith("container") and re.search(r"-[dxc]rm\d\d$", i.key))

    last, since, deadline = rm_containers(), time.monotonic(), time.monotonic() + 120
    while last and time.monotonic() - since < 10 and time.monotonic() < deadline:
        time.sleep(1)
        now = rm_containers()
        if now != last:
            last, since = now, time.monotonic()
    wait_until(lambda: not _lxd_downloading(), 60)
    time.sleep(3)


def _ours(item: dict[str, object], scope: Scope) -> bool:
    text = f"{item.get('what')} {item.get('why')}"
    return scope.named(text) or any(int(n) in scope.pids for n in re.findall(r"\b\d{2,7}\b", text))


def _prune(c: Campaign, labs: dict[str, Lab]) -> None:
    """``cman system prune --json``, once for the host and once more with each lab's own
    environment (the LXC lab's private image store)."""
    envs: list[dict[str, str]] = [{}] + [lab.env for lab in labs.values() if lab.env]
    for env in envs:
        proc = subprocess.run([sys.executable, "-m", "cman", "system", "prune", "--json"], capture_output=True,
                              text=True, timeout=600, env=cman_env(env), stdin=subprocess.DEVNULL)
        c.prune_runs.append(proc)
        with contextlib.suppress(ValueError):
            c.pruned += [i for i in json.loads(proc.stdout or "[]") if _ours(i, c.scope)]


def _hard_cleanup(c: Campaign) -> None:
    """Whatever is left of the run, removed with the engines' own tools (teardown, also on failure)."""
    import shutil

    from cman.network import netfilter

    snap = hoststate.snapshot(c.scope)
    for item in snap.items.values():
        kind = item.kind
        with contextlib.suppress(Exception):
            if kind == "docker container":
                subprocess.run(["docker", "rm", "-f", item.key], capture_output=True, timeout=60, check=False)
            elif kind == "lxd container":
                subprocess.run(["lxc", "delete", "-f", item.key], capture_output=True, timeout=60, check=False)
            elif kind == "lxc container" and "/" not in item.key:
                subprocess.run(["lxc-destroy", "-f", "-n", item.key], capture_output=True, timeout=60, check=False)
            elif kind == "lxc container":
                shutil.rmtree(item.key, ignore_errors=True)
    for item in hoststate.snapshot(c.scope).items.values():
        with contextlib.suppress(Exception):
            if item.kind == "docker network":
                subprocess.run(["docker", "network", "rm", item.key], capture_output=True, timeout=60, check=False)
            elif item.kind == "lxd network":
                subprocess.run(["lxc", "network", "delete", item.key], capture_output=True, timeout=60, check=False)
            elif item.kind == "docker image":
                subprocess.run(["docker", "image", "rm", "-f", item.key], capture_output=True, timeout=60, check=False)
            elif item.kind == "lxd image":
                subprocess.run(["lxc", "image", "delete", item.key], capture_output=True, timeout=60, check=False)
            elif item.kind == "temporary":
                path = Path(item.key)
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    for lab in c.labs.values():
        for net in lab.made_networks:
            with contextlib.suppress(Exception):
                netfilter.remove_rules(net)
            with contextlib.suppress(Exception):
                Path(f"/var/lib/lxc/.cman-networks/{net}.json").unlink(missing_ok=True)
    for lab in c.labs.values():
        subprocess.run([sys.executable, "-m", "cman", "system", "prune"], capture_output=True, check=False,
                       timeout=300, env=cman_env(lab.env), stdin=subprocess.DEVNULL)
    for item in hoststate.snapshot(c.scope).items.values():
        if item.kind == "link" and "bridge" in item.detail:
            subprocess.run(["ip", "link", "delete", item.key], capture_output=True, check=False)


@pytest.fixture(scope="module")
def campaign(request: pytest.FixtureRequest) -> Iterator[Campaign]:
    engines = _engines()
    started = time.monotonic()
    rng = random.Random(SEED)
    with private_dir(PREFIX) as work, contextlib.ExitStack() as stack:
        scope = Scope(prefixes=(PREFIX, NET_PREFIX), private=(work,))
        labs = {name: Lab(name, PREFIX, NET_PREFIX, scope, random.Random(rng.random()), work / name, KILLS)
                for name in engines}
        scope.stores = (*scope.stores, *(work / n / "lxc-images" for n in labs if n == "lxc"))
        c = Campaign(labs, scope, hoststate.snapshot(scope))
        try:
            stacks = {name: stack.enter_context(contextlib.ExitStack()) for name in labs}
            for lab in labs.values():
                lab.workdir.mkdir()

            def setup(lab: Lab) -> Callable[[], None]:
                def run() -> None:
                    lab.setup(ROOTFS, variant_rootfs)
                    PULL_SOURCES[lab.name](lab, stacks[lab.name])
                return run

            _threads(c, "set-up", {name: setup(lab) for name, lab in labs.items()})
            halves = {f"{lab.name} {half.__name__}": half for lab in labs.values()
                      for half in (lab.containers_and_images, lab.networks_and_pulls)}
            _threads(c, "kills", halves)
            _phase(c, "settle", lambda: _settle(c))
            c.after_kills = hoststate.snapshot(scope)
            _phase(c, "prune", lambda: _prune(c, labs))
            after = c.after_prune = hoststate.snapshot(scope)
            verdicts: dict[str, Verdict] = {}

            def judge(lab: Lab) -> Callable[[], None]:
                return lambda: verdicts.__setitem__(lab.name, lab.judge(after))

            _threads(c, "judge", {name: judge(lab) for name, lab in labs.items()})
            owned = {n for v in verdicts.values() for n in v.owned}
            c.half_made = [line for v in verdicts.values() for line in v.half_made]
            c.healed = [line for v in verdicts.values() for line in v.healed]
            left = c.before.diff(after)
            c.leftovers = [str(i) for i in left.added if not hoststate.owned_by(i, owned)]
            c.leftovers += [f"gone: {i}" for i in left.removed]

            def remove(lab: Lab) -> Callable[[], None]:
                return lambda: c.cleanup_failures.extend(lab.remove_owned(after))

            _threads(c, "removal", {name: remove(lab) for name, lab in labs.items()})
            c.at_end = hoststate.snapshot(scope)
            c.took = time.monotonic() - started
            capture = request.config.pluginmanager.getplugin("capturemanager")
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                _print(c)  # the counts go into CI's log even when the suite passes
            yield c
        finally:
            _hard_cleanup(c)


def _phase(c: Campaign, name: str, job: Callable[[], None]) -> None:
    started = time.monotonic()
    job()
    c.phases[name] = time.monotonic() - started


def _threads(c: Campaign, name: str, jobs: dict[str, Callable[[], None]]) -> None:
    def run() -> None:
        failures = in_threads(jobs)
        for engine, err in failures.items():
            raise AssertionError(f"{engine}: the kill campaign's {name} failed: {err!r}") from err

    _phase(c, name, run)


def _print(c: Campaign) -> None:
    assert c.after_kills is not None
    found = c.before.diff(c.after_kills)
    print(f"\n== kill campaign (seed {SEED}, {KILLS} kills per operation and engine, {c.took:.0f} s) ==")
    for lab in c.labs.values():
        print("\n".join(lab.report()))
    total = sum(s.kills for lab in c.labs.values() for s in lab.stats.values())
    print(f"kills: {total}; after the kills the run had {len(found.added)} things on the host")
    print(f"leftovers found by prune: {len(c.pruned)}")
    for item in c.pruned:
        print(f"  {item.get('where')}: {item.get('what')}: {item.get('why')}")
    print(f"leftovers after prune: {len(c.leftovers) + len(c.half_made)}")
    for line in c.leftovers + c.half_made:
        print(f"  {line}")
    if c.healed:
        print(f"networks whose host parts the next start put back: {len(c.healed)}")
        for line in c.healed:
            print(f"  {line}")
    print("phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in c.phases.items()))


# -- the checks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
def test_every_operation_was_killed_enough_times(campaign: Campaign, op: str) -> None:
    short = {name: lab.stats[op].kills for name, lab in campaign.labs.items() if lab.stats[op].kills < KILLS}
    assert not short, f"{op}: fewer than {KILLS} kills landed: {short}"


def test_prune_reports_in_json_and_exits_0(campaign: Campaign) -> None:
    for proc in campaign.prune_runs:
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
        assert isinstance(json.loads(proc.stdout), list)


def test_prune_leaves_nothing_the_test_does_not_own(campaign: Campaign) -> None:
    assert not campaign.leftovers, "left after system prune:\n" + "\n".join(campaign.leftovers)


def test_nothing_that_survives_is_half_made(campaign: Campaign) -> None:
    assert not campaign.half_made, "\n".join(campaign.half_made)


def test_the_next_cman_commands_remove_what_the_test_owns(campaign: Campaign) -> None:
    assert not campaign.cleanup_failures, "\n".join(campaign.cleanup_failures)


def test_the_host_is_exactly_as_before(campaign: Campaign) -> None:
    assert campaign.at_end is not None
    diff = campaign.before.diff(campaign.at_end)
    assert not diff, f"the host differs from before the test:\n{diff}"
