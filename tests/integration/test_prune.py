"""`cman system prune` on the real host: host-level leftovers of a killed cman (cman.leftovers).

Needs root (iptables, /run/cman) and every engine up (a rule is judged only when every
engine's networks are known): in CI both hold; elsewhere the one engines-required rule
decides.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cman._sys import files as _files
from cman.backends import backend_class, names
from cman.network import netfilter

from ..conftest import PREFIX, cli, unavailable

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module", autouse=True)
def host() -> None:
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        unavailable("system prune's host checks need root and iptables")
    down = [n for n in names() if not backend_class(n).probe().reachable]
    if down:
        unavailable(f"every engine must be up for DOCKER-USER rules to be judged; down: {', '.join(down)}")


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def rules() -> Iterator[tuple[netfilter.Rule, netfilter.Rule]]:
    """A rule of a network that is gone with its bridge, and one whose bridge still exists."""
    gone = netfilter.bridge_rule(f"{PREFIX}-gone", f"cmt{PREFIX[-6:]}x", icc=False)
    kept = netfilter.bridge_rule(f"{PREFIX}-up", "lo")
    for rule in (gone, kept):
        netfilter.run_tool(["iptables", "-w", "10", "-I", netfilter.CHAIN, "1", *rule.args])
    try:
        yield gone, kept
    finally:
        for rule in (gone, kept):
            with contextlib.suppress(Exception):
                netfilter.delete_rule(rule)


@pytest.fixture
def stale() -> Iterator[Path]:
    folder = Path("/run/cman")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _files.temp_name(f"{PREFIX}.json", _dead_pid())
    path.write_text("{half")
    live = folder / _files.temp_name(f"{PREFIX}-live.json")
    live.write_text("{being written")
    try:
        yield path
        assert live.exists(), "a file of a live process is kept"
    finally:
        path.unlink(missing_ok=True)
        live.unlink(missing_ok=True)


def test_prune_lists_then_removes_host_leftovers(rules: tuple[netfilter.Rule, netfilter.Rule], stale: Path) -> None:
    gone, kept = rules
    dry = cli("system", "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert f"host: temporary {stale}: a half-written file of process" in "\n".join(lines)
    assert any(line.startswith(f"host: rule {gone}: its network {PREFIX}-gone exists on no backend") for line in lines)
    assert not any(f"{PREFIX}-up" in line for line in lines), "a rule whose bridge exists is kept"
    assert stale.exists() and gone in netfilter.tagged_rules(), "a dry run removes nothing"

    done = cli("system", "prune", "--json")
    assert done.returncode == 0, done.stderr
    items = json.loads(done.stdout)
    mine = [i for i in items if PREFIX in i["what"]]
    assert {(i["where"], i["what"], i["removed"]) for i in mine} == {
        ("host", f"temporary {stale}", True), ("host", f"rule {gone}", True)}
    assert not stale.exists()
    assert gone not in netfilter.tagged_rules() and kept in netfilter.tagged_rules()

    again = cli("system", "prune", "--dry-run", "--json")
    assert again.returncode == 0, again.stderr
    assert not [i for i in json.loads(again.stdout) if PREFIX in i["what"]], "nothing of ours is left"


def test_prune_removes_oci_work_folders_of_dead_processes(tmp_path: Path) -> None:
    """The OCI layout's unpack folders (``.tmp-PID-STARTTIME-RANDOM``): one of a process that
    is gone is listed, then removed; one of a live process (this one) is kept."""
    from cman._sys.proc import mark

    env = {"CMAN_OCI_DIR": str(tmp_path / "oci")}
    dead = tmp_path / "oci" / f".tmp-{_dead_pid()}-12345-abcd"
    live = tmp_path / "oci" / f".tmp-{mark().replace(':', '-')}-ef01"
    for folder in (dead, live):
        (folder / "bundle").mkdir(parents=True)
    dry = cli("system", "prune", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"host: folder {dead}: an OCI unpack folder of process" in dry.stdout
    assert str(live) not in dry.stdout and dead.exists()
    done = cli("system", "prune", "--json", env=env)
    assert done.returncode == 0, done.stderr
    mine = [i for i in json.loads(done.stdout) if str(tmp_path) in i["what"]]
    assert mine == [{"where": "host", "what": f"folder {dead}", "why": mine[0]["why"], "removed": True}]
    assert not dead.exists() and live.exists()
