"""``cman image bootstrap``: a real Debian rootfs from the host's mirror, on each engine.

The first test builds with debootstrap (about 45 s here) unless the cache already holds the
tarball; the rest use the cache."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

import cman
from cman.errors import CmanError

from ..conftest import PREFIX, assert_clean_error, cli, require_root, selected_engines, unavailable

IMAGE = f"{PREFIX}-debian:bookworm"


@pytest.fixture(scope="module")
def bootstrapped() -> Iterator[list[str]]:
    """debian:bookworm bootstrapped and imported into every selected engine as IMAGE."""
    require_root("debootstrap")
    engines = [e for e in selected_engines() if cman.backends.quick_reachable(e)]
    if len(engines) != len(selected_engines()):
        unavailable(f"engines down: {set(selected_engines()) - set(engines)}")
    try:
        proc = cli("image", "bootstrap", "debian:bookworm", "--name", IMAGE, "--backend", ",".join(engines),
                   timeout=1200)
        assert proc.returncode == 0, proc.stderr
        assert "Base system installed" in proc.stderr or "from the cache" in proc.stderr, proc.stderr
        yield engines
    finally:
        for name in engines:
            with contextlib.suppress(CmanError):
                cman.backend(name).image_remove(IMAGE, force=True)


@pytest.mark.parametrize("engine_name", selected_engines())
def test_bootstrap_runs_debian(bootstrapped: list[str], engine_name: str) -> None:
    proc = cli("run", "--rm", IMAGE, "cat", "/etc/debian_version", backend=engine_name)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("12."), proc.stdout


def test_bootstrap_cached_and_json(bootstrapped: list[str]) -> None:
    import json

    proc = cli("image", "bootstrap", "debian:bookworm", "--name", IMAGE, "--backend", bootstrapped[0], "--json")
    assert proc.returncode == 0, proc.stderr
    assert "from the cache" in proc.stderr
    report = json.loads(proc.stdout)
    assert [r["backend"] for r in report["results"]] == [bootstrapped[0]]
    assert report["exit_code"] == 0 and report["results"][0]["ok"]


@pytest.mark.parametrize("image", ["debian:nosuchrelease", "ubuntu:jammy", "debian:../etc"])
def test_bootstrap_unknown_release(image: str) -> None:
    proc = cli("image", "bootstrap", image)
    assert_clean_error(proc, 2, "debootstrap on this host can build", "debian:bookworm")


def test_bootstrap_bad_backend() -> None:
    assert_clean_error(cli("image", "bootstrap", "debian:bookworm", "--backend", "nope"), 2, "unknown backend")


def test_bootstrap_needs_root(tmp_path: os.PathLike[str]) -> None:
    """A build (empty cache) as a user other than root: one line, exit 5, nothing built."""
    require_root("switching to another user")
    os.chmod(tmp_path, 0o777)
    import subprocess
    import sys

    # Everything imported first: the interpreter's files need not be readable by nobody.
    code = ("import os, sys; from cman.cli import main, images; from cman.cli.app import build_app; import cman.bootstrap, cman.imagesync; "
            "build_app('image'); os.setgid(65534); os.setuid(65534); "
            "sys.exit(main(['image', 'bootstrap', 'debian:bookworm', '--backend', 'docker']))")
    env = {**os.environ, "CMAN_BOOTSTRAP_CACHE": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         cwd=os.getcwd())
    assert_clean_error(res, 5, "only root can build")
    assert os.listdir(tmp_path) == []
