"""``image import --backend all``, ``image copy`` between engines, and image housekeeping
(rm refused while in use, prune frees only unused images), on the real engines."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import cman
from cman.errors import CmanError

from ..conftest import PREFIX, ROOTFS, assert_clean_error, cli, selected_engines, unavailable


def _engines() -> list[str]:
    if not ROOTFS.is_file():
        unavailable(f"test rootfs {ROOTFS} is missing: run scripts/setup-engines.sh")
    up = [e for e in selected_engines() if cman.backends.quick_reachable(e)]
    if len(up) != len(selected_engines()):
        unavailable(f"engines down: {set(selected_engines()) - set(up)}")
    return up


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Image names a test makes; removed from every engine afterwards, even on failure."""
    made: list[str] = []
    yield made
    for engine in selected_engines():
        with contextlib.suppress(CmanError):
            backend = cman.backend(engine)
            for c in backend.containers(all=True):
                if c.name.startswith(PREFIX):
                    backend.remove(c.name, force=True)
            for name in made:
                with contextlib.suppress(CmanError):
                    backend.image_remove(name, force=True)


def _listed(engine: str) -> dict[str, dict[str, object]]:
    proc = cli("images", "--json", backend=engine)
    assert proc.returncode == 0, proc.stderr
    return {tag: row for row in json.loads(proc.stdout) for tag in row["tags"]}


def test_import_all(names: list[str]) -> None:
    engines = _engines()
    image = f"{PREFIX}-all:1"
    names.append(image)
    proc = cli("image", "import", str(ROOTFS), image, "--backend", "all")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sorted(line.split(":", 1)[0] for line in lines) == sorted(engines), proc.stdout
    for engine in engines:
        row = _listed(engine)[image]
        assert row["size"] and row["created"], row  # same columns on every engine
        run = cli("run", "--rm", image, "cat", "/etc/passwd", backend=engine)
        assert run.returncode == 0 and "root:" in run.stdout, run.stderr


def test_import_all_json_and_failure(names: list[str]) -> None:
    """An invalid name for the engines: one line per engine, the first failure's code."""
    _engines()
    proc = cli("image", "import", str(ROOTFS), "bad name", "--backend", "all", "--json")
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    assert report["exit_code"] == 2 and all(not r["ok"] for r in report["results"])
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == len(report["results"])


def test_import_missing_tarball(tmp_path: Path) -> None:
    assert_clean_error(cli("image", "import", str(tmp_path / "none.tar"), "x", "--backend", "all"), 2, "no such file")


@pytest.mark.parametrize(("args", "needle"), [
    (["--from", "docker", "--to", "docker"], "source engine"),
    (["--from", "docker", "--to", "lxd,nope"], "unknown backend"),
    (["--from", "nope", "--to", "lxd"], "unknown backend"),
    (["--from", "docker", "--to", ""], "invalid --to"),
])
def test_copy_bad_input(args: list[str], needle: str) -> None:
    assert_clean_error(cli("image", "copy", "busybox", *args), 2, needle)


def test_copy_missing_image() -> None:
    engines = _engines()
    others = [e for e in engines if e != "docker"]
    if "docker" not in engines or not others:
        unavailable("image copy needs docker and another engine")
    assert_clean_error(cli("image", "copy", f"{PREFIX}-none:1", "--from", "docker", "--to", others[0]), 3, "not found")


def test_copy_docker_to_others(names: list[str]) -> None:
    engines = _engines()
    if "docker" not in engines or len(engines) < 2:
        unavailable("image copy needs docker and another engine")
    image = f"{PREFIX}-copy:1"
    names.append(image)
    assert cli("image", "import", str(ROOTFS), image, backend="docker").returncode == 0
    targets = [e for e in engines if e != "docker"]
    proc = cli("image", "copy", image, "--from", "docker", "--to", ",".join(targets))
    assert proc.returncode == 0, proc.stderr
    assert sorted(line.split(":", 1)[0] for line in proc.stdout.splitlines()) == sorted(targets)
    for engine in [*targets, "docker"]:  # the default command (/bin/sh) reads the script on stdin
        run = cli("run", "--rm", "-i", image, backend=engine, input="echo copied-$((40+2))\n")
        assert run.returncode == 0, run.stderr
        assert "copied-42" in run.stdout, (engine, run.stdout)


@pytest.mark.parametrize("engine_name", selected_engines())
def test_rm_refused_while_in_use(names: list[str], engine_name: str) -> None:
    _engines()
    used = f"{PREFIX}-used:1"
    names.append(used)
    assert cli("image", "import", str(ROOTFS), used, backend=engine_name).returncode == 0
    box = f"{PREFIX}-user"
    assert cli("create", "--name", box, used, "sleep", "60", backend=engine_name).returncode == 0, "create"
    assert used in _listed(engine_name)
    assert_clean_error(cli("image", "rm", used, backend=engine_name), 4, "in use", box)
    assert used in _listed(engine_name)
    assert cli("rm", "-f", box, backend=engine_name).returncode == 0
    assert cli("image", "rm", used, backend=engine_name).returncode == 0
    assert used not in _listed(engine_name)


def test_prune_all_frees_only_unused(tmp_path: Path) -> None:
    """``image prune --all`` removes every image no container uses, so it runs on an engine of
    the test's own: raw LXC with a private LXC path and image store (on the shared Docker and
    LXD it would remove other tests' images). Plain ``prune`` is in test_conformance."""
    if "lxc" not in _engines():
        unavailable("lxc is not reachable")
    env = {"CMAN_LXC_PATH": str(tmp_path / "lxc"), "CMAN_LXC_IMAGES": str(tmp_path / "images")}
    (tmp_path / "lxc").mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, backend="lxc", env=env)

    def listed() -> set[str]:
        proc = run("images", "--json")
        assert proc.returncode == 0, proc.stderr
        return {tag for row in json.loads(proc.stdout) for tag in row["tags"]}

    used, spare = f"{PREFIX}-used:1", f"{PREFIX}-spare:1"
    box = f"{PREFIX}-user"
    try:
        for image in (used, spare):
            assert run("image", "import", str(ROOTFS), image).returncode == 0
        made = run("create", "--privileged", "--name", box, used, "sleep", "60")  # private path below 0700 /tmp
        assert made.returncode == 0, made.stderr
        assert listed() == {used, spare}
        proc = run("image", "prune", "--all", "--json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert listed() == {used}, "prune --all must keep the image in use and remove the other"
        assert result["removed"] == [spare] and result["reclaimed_bytes"] > 0
        text = run("image", "prune", "--all")
        assert text.returncode == 0 and "reclaimed: 0B" in text.stdout
    finally:
        run("rm", "-f", box)
