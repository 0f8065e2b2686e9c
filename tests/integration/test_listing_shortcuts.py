"""The shortcuts behind cheap listings and stats (issue 10), checked against each engine's own answer.

- LXC's listing reads states and init PIDs from liblxc's monitor processes instead of
  ``lxc-ls -f``; LXD's listing is ``recursion=1`` and its PIDs come from the same monitors.
  Both must say what ``lxc-info`` / LXD's instance state / ``docker inspect`` say: running,
  stopped and frozen (paused), with the same PID.
- ``stats --no-stream`` reads every cgroup under the engines' parents before listing: the
  cgroup of each running container's init must be among those early readings, so that one
  interval is enough.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator

import pytest

from cman import backends as registry
from cman.cgroups import default_reader, scan
from cman.models import State

from ..conftest import Engine

pytestmark = pytest.mark.engine


def _tool(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout.strip()


def engine_says(eng: Engine, name: str) -> tuple[State, int | None]:
    """(state, init PID) from the engine's own tool, never from cman."""
    if eng.name == "docker":
        state = json.loads(_tool("docker", "inspect", "--format", "{{json .State}}", name))
        st = State.PAUSED if state["Paused"] else State.RUNNING if state["Running"] else State.STOPPED
        return st, state["Pid"] or None
    if eng.name == "lxd":
        state = json.loads(_tool("lxc", "query", f"/1.0/instances/{name}/state"))
        st = {"Running": State.RUNNING, "Frozen": State.PAUSED}.get(state["status"], State.STOPPED)
        return st, state["pid"] or None
    lxcpath = eng.backend.lxcpath  # type: ignore[attr-defined]
    st_text = _tool("lxc-info", "-P", lxcpath, "-n", name, "-s", "-H")
    pid = _tool("lxc-info", "-P", lxcpath, "-n", name, "-p", "-H")
    st = {"RUNNING": State.RUNNING, "FROZEN": State.PAUSED}.get(st_text, State.STOPPED)
    return st, int(pid) if pid.isdigit() else None


def _pause(eng: Engine, name: str, undo: bool = False) -> None:
    if eng.name == "docker":
        _tool("docker", "unpause" if undo else "pause", name)
    elif eng.name == "lxd":
        _tool("lxc", "start" if undo else "pause", name)
    else:
        _tool("lxc-unfreeze" if undo else "lxc-freeze", "-P", eng.backend.lxcpath, "-n", name)  # type: ignore[attr-defined]


@pytest.fixture
def three(eng: Engine) -> Iterator[dict[str, str]]:
    """A running, a paused and a stopped container of the engine."""
    made: dict[str, str] = {}
    paused = ""
    try:
        for tag in ("up", "paused"):
            name = eng.name_for(tag)
            proc = eng.cli("run", "-d", "--name", name, eng.image, "sleep", "600")
            assert proc.returncode == 0, proc.stderr
            made[tag] = name
        name = eng.name_for("down")
        proc = eng.cli("create", "--name", name, eng.image, "sleep", "600")
        assert proc.returncode == 0, proc.stderr
        made["down"] = name
        _pause(eng, made["paused"])
        paused = made["paused"]
        yield made
    finally:
        if paused:  # removal of a frozen container is not what this test is about
            with contextlib.suppress(AssertionError):
                _pause(eng, paused, undo=True)


def test_the_listing_says_what_the_engine_says(eng: Engine, three: dict[str, str]) -> None:
    listing = {c.name: c for c in eng.backend.containers(all=True) if c.name in three.values()}
    assert set(listing) == set(three.values())
    pids = eng.backend.init_pids(list(listing.values()))
    for name, c in listing.items():
        state, pid = engine_says(eng, name)
        seen = State.STOPPED if c.state == State.CREATED else c.state  # cman's word for never started
        assert (seen, pids[c.id]) == (state, pid), name
    assert listing[three["up"]].state == State.RUNNING
    assert listing[three["paused"]].state == State.PAUSED
    assert listing[three["down"]].state in (State.STOPPED, State.CREATED)
    running = {c.name for c in eng.backend.containers() if c.name in three.values()}
    assert running == {three["up"], three["paused"]}


def test_every_running_container_has_an_early_reading(eng: Engine, three: dict[str, str]) -> None:
    early = scan.read_parents(default_reader(), registry.CGROUP_PARENTS[eng.name])
    for tag in ("up", "paused"):
        _, pid = engine_says(eng, three[tag])
        assert pid is not None
        cgroups = default_reader().resolve(pid)
        keys = {("v2", cgroups.v2), ("v1", cgroups.v1_cpuacct)}
        assert keys & set(early), (three[tag], keys, sorted(early)[:10])
