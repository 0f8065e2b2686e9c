"""cman system prune without an engine: process marks, temporary files, DOCKER-USER rules, the report."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import cman.backends
from cman import leftovers
from cman._sys import files as _files
from cman._sys import proc as _proc
from cman.cli import main
from cman.errors import EngineError
from cman.network import netfilter

from .fake_backend import FakeBackend


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    assert _proc.start_time(child.pid) is None
    return child.pid


# -- process identity (cman._sys.proc) -------------------------------------------------------------


def test_a_process_is_named_by_pid_and_start_time(tmp_path: Path) -> None:
    me = _proc.mark()
    parsed = _proc.parse_mark(me)
    assert parsed is not None and parsed[0] == os.getpid() and _proc.process_alive(*parsed)
    assert _proc.mark_alive(me) is True
    assert _proc.process_alive(os.getpid(), parsed[1] + 1) is False, "same PID, another process: not alive"
    dead = _dead_pid()
    assert _proc.mark_alive(f"{dead}:{parsed[1]}") is False
    for junk in ("", "12", "0:5", "-1:3", "a:b", "1:2\n3"):
        assert _proc.mark_alive(junk) is None, junk
    # The command name is in parentheses and may hold spaces and ')': count from the last one.
    odd = tmp_path / "x) y z"
    odd.symlink_to("/bin/sleep")
    child = subprocess.Popen([str(odd), "5"])
    try:
        started = _proc.start_time(child.pid)
        assert started is not None and _proc.process_alive(child.pid, started)
    finally:
        child.kill()
        child.wait()


# -- temporary files ---------------------------------------------------------------------------------


def test_stale_temporaries_are_those_of_dead_processes(tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = tmp_path / _files.temp_name("a.json", dead)
    live = tmp_path / _files.temp_name("b.json")
    deep = tmp_path / "x" / "y" / _files.temp_name("c.json", dead)
    too_deep = tmp_path / "x" / "y" / "z" / _files.temp_name("d.json", dead)
    in_rootfs = tmp_path / "rootfs" / _files.temp_name("e", dead)
    not_ours = tmp_path / f".f.cman-{dead}.tmpx"
    for path in (stale, live, deep, too_deep, in_rootfs, not_ours):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    found = leftovers.stale_temporaries([tmp_path], dry_run=True)
    assert [item.what for item in found] == [f"temporary {stale}", f"temporary {deep}"]
    assert all(item.where == "host" and f"process {dead}" in item.why and not item.removed for item in found)
    assert stale.exists() and deep.exists(), "a dry run removes nothing"
    removed = leftovers.stale_temporaries([tmp_path], dry_run=False)
    assert [item.removed for item in removed] == [True, True]
    assert not stale.exists() and not deep.exists()
    assert live.exists() and too_deep.exists() and in_rootfs.exists() and not_ours.exists()


def test_atomic_write_names_its_temporary_file_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str, **kw: object) -> None:
        seen.append(Path(src).name)
        real_replace(src, dst, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", spy)
    _files.atomic_write(tmp_path / "rec.json", "{}")
    assert seen == [_files.temp_name("rec.json")] and _files.temp_owner(seen[0]) == os.getpid()


# -- DOCKER-USER rules ------------------------------------------------------------------------------


@pytest.fixture
def rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[netfilter.Rule]:
    table = [netfilter.bridge_rule("live", "br-live"), netfilter.bridge_rule("gone", "br-gone", icc=False),
             netfilter.bridge_rule("elsewhere", "br-up"), netfilter.Rule(("-i", "x", "-j", "ACCEPT"))]
    monkeypatch.setenv("CMAN_NETWORK_LOCK", str(tmp_path / "network.lock"))
    monkeypatch.setattr(leftovers.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    monkeypatch.setattr(netfilter, "tagged_rules", lambda: [r for r in table if r.network])
    monkeypatch.setattr(netfilter, "link_exists", lambda name: name == "br-up")

    def delete(rule: netfilter.Rule) -> bool:
        table.remove(rule)
        return True

    monkeypatch.setattr(netfilter, "delete_rule", delete)
    return table


def test_a_rule_whose_network_and_bridge_are_gone_is_removed(rules: list[netfilter.Rule]) -> None:
    lxd = FakeBackend()
    lxd.network_names = ["live"]
    found, why_not = leftovers.orphan_rules([lxd], [], dry_run=True)
    assert why_not is None and len(found) == 1 and len(rules) == 4
    assert found[0].what == "rule -A DOCKER-USER -i br-gone -o br-gone -m comment --comment cman:gone -j DROP"
    assert "network gone exists on no backend" in found[0].why and "br-gone is gone" in found[0].why
    found, _ = leftovers.orphan_rules([lxd], [], dry_run=False)
    assert [item.removed for item in found] == [True]
    assert [r.network for r in rules] == ["live", "elsewhere", None]


def test_no_rule_is_judged_while_an_engine_cannot_be_asked(rules: list[netfilter.Rule]) -> None:
    found, why_not = leftovers.orphan_rules([FakeBackend()], ["lxd (not running)"], dry_run=False)
    assert found == [] and len(rules) == 4
    assert why_not is not None and "lxd (not running)" in why_not


# -- the whole prune and its command ------------------------------------------------------------------


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, FakeBackend]:
    made = {name: FakeBackend() for name in ("docker", "lxd")}
    made["docker"].leftover_lines = ["container web: created by a run that was killed before it started"]

    class Broken(FakeBackend):
        def prune_leftovers(self, *, dry_run: bool = False) -> list[str]:
            raise EngineError("lxc: the LXC path is not readable")

    made["lxc"] = Broken()
    monkeypatch.setattr(cman.backends, "backend_class", lambda name: FakeBackend)  # reachable, no engine asked
    monkeypatch.setattr(cman.backends, "load", lambda name: made[name])
    monkeypatch.setattr(leftovers, "orphan_rules", lambda loaded, unknown, dry_run: ([], None))
    monkeypatch.setattr(leftovers, "HOST_FOLDERS", (tmp_path,))
    monkeypatch.delenv("CMAN_RUN_DIR", raising=False)
    (tmp_path / _files.temp_name("monitor.json", _dead_pid())).write_text("{")
    return made


def test_prune_asks_every_engine_and_the_host(engines: dict[str, FakeBackend], tmp_path: Path) -> None:
    report = leftovers.prune(dry_run=True)
    assert str(report.items[0]) == (
        "docker: container web: created by a run that was killed before it started")
    assert [item.where for item in report.items] == ["docker", "host"]
    assert [(where, str(err)) for where, err in report.problems] == [("lxc", "lxc: the LXC path is not readable")]
    assert all("prune dry_run=True" in b.calls for b in engines.values() if type(b) is FakeBackend)


def test_system_prune_command(engines: dict[str, FakeBackend], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["system", "prune", "--dry-run"]) == 1, "the first engine that failed gives the exit code"
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "docker: container web: created by a run that was killed before it started"
    assert lines[1].startswith("host: temporary ") and lines[1].endswith(", which is gone")
    assert "cman: lxc: lxc: the LXC path is not readable" in err and "dry run: nothing was removed" in err
    assert main(["system", "prune", "--json"]) == 1
    items = json.loads(capsys.readouterr().out)
    assert [(i["where"], i["removed"]) for i in items] == [("docker", True), ("host", True)]
    assert set(items[0]) == {"where", "what", "why", "removed"}
    engines["lxc"] = FakeBackend()
    assert main(["system", "prune"]) == 0
