"""``--rm`` that holds when cman is SIGKILLed, ephemeral containers that destroy themselves,
and ``prune_leftovers`` on raw LXC, against real LXC.

Runs in a private LXC path and image store (:mod:`.lxc_lab`). Networks need root
(bridges, iptables) and follow the engines-required rule; subnets are random /24s of
10.203.0.0/16, and the only traffic is none at all. Everything is removed in teardown,
also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cman._sys.proc import mark
from cman.backends.lxc import net as lxc_net
from cman.errors import CmanError
from cman.models import RUN_LABEL, ContainerSpec
from cman.network import netfilter

from ..conftest import require_root
from .lxc_lab import Lxc, free_subnet, private_lxc, wait_for

pytestmark = pytest.mark.engine

DEAD = "999999999:5"
"""The ``PID:STARTTIME`` of no process: PIDs stop far below (kernel.pid_max <= 4194304)."""


@pytest.fixture(scope="module")
def lx() -> Iterator[Lxc]:
    with private_lxc() as lab:
        yield lab


@pytest.fixture
def made(lx: Lxc) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(CmanError):
            lx.backend.remove(name, force=True)


def _in_container(lx: Lxc, name: str, argv: list[str]) -> bool:
    """Is ``argv`` running inside container ``name`` (in its PID namespace)?"""
    init = lx.backend.init_pid(name)
    if init is None:
        return False
    pidns = os.readlink(f"/proc/{init}/ns/pid")
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{entry}/cmdline").read_bytes() == want and os.readlink(f"/proc/{entry}/ns/pid") == pidns:
                return True
    return False


def test_run_rm_holds_when_cman_is_sigkilled(lx: Lxc) -> None:
    name = lx.name("kill9")
    proc = lx.popen("run", "--rm", "--name", name, lx.image, "sleep", "3")
    try:
        wait_for(lambda: lx.ls().get(name, ("",))[0] == "RUNNING" and _in_container(lx, name, ["sleep", "3"]),
                 timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # the job ends after its 3 s, halts its container, and LXC destroys the ephemeral container
        wait_for(lambda: name not in lx.ls() and not (lx.lxcpath / name).exists(), timeout=60, step=0.25)
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(CmanError):
            lx.backend.remove(name, force=True)


def test_a_run_killed_between_boot_and_job_is_a_leftover(lx: Lxc, made: list[str]) -> None:
    """The one window --rm cannot cover by itself: cman killed after the container booted and
    before the job's lxc-attach. Nothing in the container would ever halt it; prune finds it."""
    name = lx.name("window")
    made.append(name)
    lx.backend.create(ContainerSpec(image=lx.image, name=name, command=("sleep", "300"), auto_remove=True,
                                    labels={RUN_LABEL: DEAD}))
    state = lx.lxcpath / name / "cman.state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "started": "2024-01-01T00:00:00+00:00"}))
    subprocess.run(["lxc-start", "-P", str(lx.lxcpath), "-n", name, "-d"], check=True, timeout=60)
    wait_for(lambda: lx.ls().get(name, ("",))[0] == "RUNNING", timeout=30)
    assert lx.backend.prune_leftovers(dry_run=True) == [
        f"container {name}: booted by a run that was killed before the container's job began"]
    busy = lx.name("busy")
    made.append(busy)
    lx.backend.create(ContainerSpec(image=lx.image, name=busy, command=("sleep", "300"), labels={RUN_LABEL: DEAD}))
    lx.backend.start(busy)  # a job that began: the user's container now
    assert not json.loads((lx.lxcpath / busy / "cman.state.json").read_text()).get("job_pending")
    assert len(lx.backend.prune_leftovers()) == 1
    wait_for(lambda: not (lx.lxcpath / name).exists(), timeout=30)
    assert lx.backend.inspect(busy).state.value == "running"


def test_a_rm_run_killed_before_lxc_start_is_a_leftover(lx: Lxc, made: list[str]) -> None:
    """Found by the kill suite: a foreground ``run --rm`` killed after its start was recorded
    and before lxc-start booted it. LXC destroys an ephemeral container only when it stops
    after running, so this one stays stopped for good unless prune takes it; a --rm container
    that a live process works on, or one never started, is left alone."""
    mine = lx.name("norun")
    made.append(mine)
    lx.backend.create(ContainerSpec(image=lx.image, name=mine, command=("true",), auto_remove=True,
                                    labels={RUN_LABEL: DEAD}))
    state = lx.lxcpath / mine / "cman.state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "started": "2024-01-01T00:00:00+00:00"}))
    live = lx.name("live")
    made.append(live)
    lx.backend.create(ContainerSpec(image=lx.image, name=live, command=("true",), auto_remove=True,
                                    labels={RUN_LABEL: mark()}))
    state = lx.lxcpath / live / "cman.state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "started": "2024-01-01T00:00:00+00:00"}))
    assert lx.backend.prune_leftovers(dry_run=True) == [
        f"container {mine}: a --rm container of a killed run that stopped without being destroyed"]
    lx.backend.prune_leftovers()
    assert not (lx.lxcpath / mine).exists() and (lx.lxcpath / live).exists()


def test_wait_gets_the_code_of_a_container_that_destroys_itself(lx: Lxc) -> None:
    for code in (0, 3):
        name = lx.name(f"eph{code}")
        proc = lx.cli("run", "-d", "--rm", "--name", name, lx.image, "sh", "-c", f"sleep 1; exit {code}")
        assert proc.returncode == 0, proc.stderr
        assert lx.backend.wait(name) == code
        wait_for(lambda n=name: not (lx.lxcpath / n).exists(), timeout=30)  # type: ignore[misc]
        with pytest.raises(CmanError):
            lx.backend.inspect(name)


def test_foreground_rm_keeps_the_exit_code(lx: Lxc) -> None:
    proc = lx.cli("run", "--rm", lx.image, "sh", "-c", "echo bye; exit 4")
    assert (proc.returncode, proc.stdout) == (4, "bye\n"), proc.stderr
    assert "Traceback" not in proc.stderr and "could not remove" not in proc.stderr
    assert not [n for n in lx.ls() if n.startswith("cman-")], "nothing left"


def test_prune_finds_and_removes_only_what_a_killed_cman_left(lx: Lxc, made: list[str]) -> None:
    require_root("LXC networks (bridges, iptables)")
    subnets: set[str] = set()
    network, stray = f"cmantest-{secrets.token_hex(3)}", f"cmantest-{secrets.token_hex(3)}"
    bridges: list[str] = []
    by_hand = f"cmth{secrets.token_hex(3)}"
    try:
        for net in (network, stray):
            proc = lx.cli("network", "create", net, "--subnet", str(free_subnet(subnets)), "--json")
            assert proc.returncode == 0, proc.stderr
            bridges.append(str(json.loads(proc.stdout)["bridge"]))
        subprocess.run(["ip", "link", "add", "name", by_hand, "type", "bridge"], check=True, timeout=30)
        # a killed run that never started the container it made
        killed = lx.name("killed")
        made.append(killed)
        lx.backend.create(ContainerSpec(image=lx.image, name=killed, labels={RUN_LABEL: DEAD}))
        # a live run's container and a user's are not leftovers
        keep = lx.name("keep")
        made.append(keep)
        lx.backend.create(ContainerSpec(image=lx.image, name=keep, labels={RUN_LABEL: f"1:{_start_of_init()}"}))
        # a lease whose container was destroyed outside cman
        leased = lx.name("leased")
        made.append(leased)
        assert lx.cli("create", "--name", leased, "--network", network, lx.image).returncode == 0
        subprocess.run(["lxc-destroy", "-P", str(lx.lxcpath), "-n", leased], check=True, capture_output=True,
                       timeout=60)
        # a network create killed before its record: the bridge and its rule are left
        (lx.lxcpath / lxc_net.RECORDS_DIR / f"{stray}.json").unlink()
        # a half-made container, and an image import killed mid-way
        half = lx.lxcpath / lx.name("half")
        half.mkdir()
        (half / ".cman-creating").write_text(DEAD)
        work = lx.images / ".tmp-999999999-5-0123abcd"
        work.mkdir()

        listed = lx.backend.prune_leftovers(dry_run=True)
        kinds = sorted(item.split(" ", 1)[0] for item in listed)
        assert kinds == ["bridge", "container", "container", "lease", "temporary"], listed
        assert netfilter.link_exists(bridges[1]) and half.exists() and work.exists(), "a dry run removes nothing"

        assert lx.backend.prune_leftovers() == listed
        assert not netfilter.link_exists(bridges[1]) and netfilter.list_rules(stray) == []
        assert not half.exists() and not work.exists() and not (lx.lxcpath / killed).exists()
        assert json.loads((lx.lxcpath / lxc_net.RECORDS_DIR / f"{network}.json").read_text())["allocations"] == {}
        assert netfilter.link_exists(bridges[0]) and netfilter.link_exists(by_hand), "others' bridges stay"
        assert (lx.lxcpath / keep / "config").exists()
        assert lx.backend.prune_leftovers() == []
    finally:
        with contextlib.suppress(CmanError):
            lx.backend.network_remove(network, force=True)
        for net, bridge in zip((network, stray), bridges, strict=False):
            with contextlib.suppress(CmanError):
                netfilter.remove_rules(net, bridge)
            with contextlib.suppress(CmanError):
                netfilter.delete_link(bridge)
        with contextlib.suppress(CmanError):
            netfilter.delete_link(by_hand)


def _start_of_init() -> int:
    from cman._sys.proc import start_time

    value = start_time(1)
    assert value is not None
    return value
