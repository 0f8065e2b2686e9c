"""``prune_leftovers`` of the LXC backend without an engine: what a killed cman left is
found (and with ``dry_run`` only listed), and what a user made or a live cman is making
is never touched."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cman._sys import proc as _proc
from cman.backends.lxc import LxcBackend, connection, leftovers, tools
from cman.backends.lxc import net as lxc_net
from cman.models import RUN_LABEL
from cman.network import NetworkSpec, netfilter

DEAD = "999999999:5"
"""A mark no process can have: PIDs stop far below (kernel.pid_max <= 4194304)."""


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LxcBackend:
    monkeypatch.setenv(tools.ENV_LXC_PATH, str(tmp_path / "lxc"))
    monkeypatch.setenv(tools.ENV_IMAGES, str(tmp_path / "images"))
    monkeypatch.setenv("CMAN_NETWORK_LOCK", str(tmp_path / "network.lock"))
    monkeypatch.setattr(connection.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(leftovers, "which", lambda name: None)  # no bridges unless a test says so
    (tmp_path / "lxc").mkdir()
    (tmp_path / "images").mkdir()
    return LxcBackend()


def _dir(backend: LxcBackend, name: str, *, config: bool = False, mark: str | None = None,
         meta: dict[str, Any] | None = None, started: str | None = None) -> Path:
    folder = Path(backend.lxcpath) / name
    folder.mkdir()
    if config:
        (folder / "config").write_text("lxc.uts.name = x\n")
    if mark is not None:
        (folder / ".cman-creating").write_text(mark)
    if meta is not None:
        (folder / "cman.json").write_text(json.dumps(meta))
        (folder / "cman.state.json").write_text(json.dumps({"started": started}))
    return folder


def _prune_twice(backend: LxcBackend) -> tuple[list[str], list[str]]:
    listed = backend.prune_leftovers(dry_run=True)
    done = backend.prune_leftovers()
    assert done == listed, "a dry run lists exactly what a prune removes"
    assert backend.prune_leftovers() == [], "nothing left the second time"
    return listed, done


def test_half_made_containers_of_dead_creators_only(backend: LxcBackend) -> None:
    dead = _dir(backend, "half", mark=DEAD)
    live = _dir(backend, "busy", mark=_proc.mark())
    unmarked = _dir(backend, "someone-elses")
    complete = _dir(backend, "made", config=True, mark=DEAD)  # killed after the config: a container
    renaming = Path(backend.lxcpath) / ".cman-new-999999999-5-abcd"
    renaming.mkdir()
    listed = backend.prune_leftovers(dry_run=True)
    assert sorted(item.split(":")[0] for item in listed) == ["container .cman-new-999999999-5-abcd",
                                                             "container half"]
    assert dead.exists() and renaming.exists(), "a dry run removes nothing"
    _prune_twice(backend)
    assert not dead.exists() and not renaming.exists()
    assert live.exists() and unmarked.exists() and complete.exists()


def test_containers_of_a_killed_run_that_never_started(backend: LxcBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    removed: list[str] = []
    monkeypatch.setattr(backend, "remove", lambda name, force=False: removed.append(name))
    _dir(backend, "killed", config=True, meta={"managed": True, "labels": {RUN_LABEL: DEAD}})
    _dir(backend, "ran", config=True, meta={"managed": True, "labels": {RUN_LABEL: DEAD}},
         started="2024-01-01T00:00:00+00:00")
    _dir(backend, "running-run", config=True, meta={"managed": True, "labels": {RUN_LABEL: _proc.mark()}})
    _dir(backend, "created", config=True, meta={"managed": True, "labels": {}})
    _dir(backend, "forged", config=True, meta={"managed": True, "labels": {RUN_LABEL: "not-a-mark"}})
    listed = backend.prune_leftovers(dry_run=True)
    assert listed == ["container killed: created by a run that was killed before it started"]
    assert removed == []
    backend.prune_leftovers()
    assert removed == ["killed"]


def test_a_stopped_container_still_marked_job_pending_is_a_leftover(backend: LxcBackend,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between the boot and the job's launch, then stopped (by anyone): the mark that
    start() sets before the boot and clears after the launch is still there."""
    removed: list[str] = []
    monkeypatch.setattr(backend, "remove", lambda name, force=False: removed.append(name))
    meta = {"managed": True, "labels": {RUN_LABEL: DEAD}, "command": ["sleep", "300"]}
    pending = _dir(backend, "pending", config=True, meta=meta, started="2024-01-01T00:00:00+00:00")
    state = pending / "cman.state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "job_pending": True}))
    launched = _dir(backend, "launched", config=True, meta=meta, started="2024-01-01T00:00:00+00:00")
    (launched / "cman.state.json").write_text(json.dumps({"started": "2024-01-01T00:00:00+00:00",
                                                          "job_pending": None}))
    monkeypatch.setattr(backend, "_info", lambda paths: ("STOPPED", None))
    listed = backend.prune_leftovers(dry_run=True)
    assert listed == ["container pending: booted by a run that was killed before the container's job began"]
    backend.prune_leftovers()
    assert removed == ["pending"], "a stopped container whose job was launched is the user's"


def test_stale_leases_are_dropped(backend: LxcBackend) -> None:
    record = lxc_net.new_record(NetworkSpec("cmantest-n", subnet="10.203.9.0/24", gateway="10.203.9.1",
                                            bridge="cmtbr0"))
    record["allocations"] = {"alive": "10.203.9.2", "gone": "10.203.9.3"}
    backend.net_records.save(record)
    folder = _dir(backend, "alive", config=True)
    (folder / "cman.json").write_text(json.dumps({"managed": True, "network": "cmantest-n", "ip": "10.203.9.2"}))
    listed, _ = _prune_twice(backend)
    assert listed == ["lease cmantest-n/gone 10.203.9.3: its container is gone"]
    assert backend.net_records.get("cmantest-n")["allocations"] == {"alive": "10.203.9.2"}


def test_only_bridges_cman_made_for_this_lxc_path_and_no_record_names(backend: LxcBackend,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    record = lxc_net.new_record(NetworkSpec("kept", subnet="10.203.9.0/24", gateway="10.203.9.1", bridge="cmtkept"))
    backend.net_records.save(record)
    mine = lxc_net.bridge_mark(backend.lxcpath, "lost")
    links = [
        {"ifname": "cmtlost", "ifalias": mine},
        {"ifname": "cmtkept", "ifalias": lxc_net.bridge_mark(backend.lxcpath, "kept")},
        {"ifname": "cmtother", "ifalias": lxc_net.bridge_mark("/var/lib/other-lxc", "lost")},
        {"ifname": "docker0"},
        {"ifname": "usersbr", "ifalias": "cman:lxc:made-by-hand"},
        {"ifname": "lxdbr0", "ifalias": "something else"},
    ]
    calls: list[tuple[str, ...]] = []

    def run_tool(argv: list[str], *, check: bool = True) -> _proc.Completed:
        calls.append(tuple(argv))
        return _proc.Completed(tuple(argv), 0, json.dumps(links), "")

    monkeypatch.setattr(leftovers, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(netfilter, "run_tool", run_tool)
    deleted: list[str] = []
    monkeypatch.setattr(netfilter, "delete_link", lambda name: deleted.append(name) or True)
    monkeypatch.setattr(netfilter, "remove_rules", lambda network, bridge=None: deleted.append(f"rules:{network}"))
    assert backend.prune_leftovers(dry_run=True) == [
        "bridge cmtlost: made by cman for LXC network lost, which no longer exists"]
    assert deleted == []
    backend.prune_leftovers()
    assert deleted == ["rules:lost", "cmtlost"]


def test_bridge_marks_round_trip() -> None:
    mark = lxc_net.bridge_mark("/var/lib/lxc", "web-1")
    assert len(mark.encode()) < 128, "the kernel keeps at most 128 bytes of an alias"
    assert lxc_net.parse_bridge_mark(mark, "/var/lib/lxc") == "web-1"
    assert lxc_net.parse_bridge_mark(mark, "/tmp/lxc") is None
    assert lxc_net.parse_bridge_mark("cman:lxd:web-1", "/var/lib/lxc") is None


def test_temporaries_of_dead_processes(backend: LxcBackend) -> None:
    store = backend.store.root
    dead_work = store / ".tmp-999999999-5-abcd"
    dead_work.mkdir()
    live_work = backend.store.new_workdir()
    image = store / ("ab" * 32)
    half_shift = image / ".rootfs.u100000-g100000-n65536.tmp-999999999-5-ef01"
    half_shift.mkdir(parents=True)
    records = Path(backend.lxcpath) / lxc_net.RECORDS_DIR
    records.mkdir()
    dead_tmp = records / ".web.json.cman-999999999.tmp"
    dead_tmp.write_text("{")
    live_tmp = records / f".web.json.cman-{os.getpid()}.tmp"
    live_tmp.write_text("{")
    listed, _ = _prune_twice(backend)
    assert len(listed) == 3 and all(item.startswith("temporary ") for item in listed), listed
    assert not dead_work.exists() and not half_shift.exists() and not dead_tmp.exists()
    assert live_work.exists() and live_tmp.exists() and image.exists()
