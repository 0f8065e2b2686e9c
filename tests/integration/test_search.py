"""``cman search`` against real sources on loopback: the local registry (127.0.0.1:5000, whose
``/v2/_catalog`` and ``/v2/REPO/tags/list`` a registry mirror serves too) and a simplestreams
image server of the test's own (HTTPS on 127.0.0.1, as in test_lxd_pull). The test's
repositories are copies of setup's image under a ``PREFIX`` name, deleted afterwards."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import PREFIX, ROOTFS, assert_clean_error, cli, unavailable
from .test_lxd_pull import ImageServer, serve

REGISTRY = "127.0.0.1:5000"
SOURCE_IMAGE = f"{REGISTRY}/cman/configured:latest"
REPO = f"{PREFIX}/searchme"
TAGS = ("one", "two")


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def repo() -> Iterator[str]:
    """``PREFIX/searchme:{one,two}`` in the local registry, removed afterwards."""
    if shutil.which("skopeo") is None:
        unavailable("skopeo is not installed: run scripts/setup-engines.sh")
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        opener.open(f"http://{REGISTRY}/v2/", timeout=5).close()
    except OSError as err:
        unavailable(f"the local registry {REGISTRY} does not answer ({err}): run scripts/setup-engines.sh")
    try:
        for tag in TAGS:
            got = _skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                          f"docker://{SOURCE_IMAGE}", f"docker://{REGISTRY}/{REPO}:{tag}")
            if got.returncode != 0:
                unavailable(f"cannot push a test image to {REGISTRY}: {got.stderr.strip()}")
        yield REPO
    finally:
        for tag in TAGS:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                _skopeo("delete", "--tls-verify=false", f"docker://{REGISTRY}/{REPO}:{tag}")


@pytest.fixture
def quiet_env(tmp_path: Path) -> dict[str, str]:
    """No config file, no mirror, no LXD remote but what a test sets."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "CMAN_REGISTRY_MIRROR": "", "CMAN_LXD_REMOTES": "",
            "CMAN_LXD_REMOTE_CERTS": ""}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_finds_the_repository_and_its_tags(repo: str, quiet_env: dict[str, str]) -> None:
    got = cli("search", PREFIX, env={**quiet_env, "CMAN_REGISTRY_MIRROR": f"http://{REGISTRY}"})
    assert got.returncode == 0, got.stderr
    assert got.stderr == ""
    lines = got.stdout.splitlines()
    assert lines[0].split() == ["SOURCE", "NAME", "TAGS"]
    assert [line.split(None, 2) for line in lines[1:]] == [[REGISTRY, f"{REGISTRY}/{repo}", "one, two"]], got.stdout


def test_search_registries_from_the_config_file(repo: str, quiet_env: dict[str, str], tmp_path: Path) -> None:
    conf = Path(quiet_env["XDG_CONFIG_HOME"]) / "cman" / "config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text(f'search_registries = ["http://{REGISTRY}"]\n')
    got = cli("search", "--json", "SEARCHME", env=quiet_env)
    assert got.returncode == 0, got.stderr
    assert f"{REGISTRY}/{repo}" in [hit["name"] for hit in json.loads(got.stdout)]


def test_json_shape(repo: str, quiet_env: dict[str, str]) -> None:
    got = cli("search", "--json", PREFIX, env={**quiet_env, "CMAN_REGISTRY_MIRROR": f"http://{REGISTRY}"})
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == [{"source": REGISTRY, "kind": "registry", "name": f"{REGISTRY}/{repo}",
                                       "repository": repo, "tags": list(TAGS)}]


def test_an_unreachable_source_is_one_line(repo: str, quiet_env: dict[str, str]) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    got = cli("search", PREFIX, env={**quiet_env, "CMAN_REGISTRY_MIRROR": f"{dead},http://{REGISTRY}"})
    assert got.returncode == 0, got.stderr
    assert got.stderr.splitlines() == [f"cman: search: {dead}: Connection refused"], got.stderr
    assert f"{REGISTRY}/{repo}" in got.stdout
    alone = cli("search", PREFIX, env={**quiet_env, "CMAN_REGISTRY_MIRROR": dead})
    assert_clean_error(alone, 5, dead, "refused")
    assert alone.stdout == ""


def test_no_match_is_success_with_nothing(repo: str, quiet_env: dict[str, str]) -> None:
    got = cli("search", f"{PREFIX}-nothing-matches", env={**quiet_env, "CMAN_REGISTRY_MIRROR": f"http://{REGISTRY}"})
    assert (got.returncode, got.stdout, got.stderr) == (0, "", "")


def test_limit_bounds_each_source(repo: str, quiet_env: dict[str, str]) -> None:
    got = cli("search", "--json", "--limit", "1", "cman", env={**quiet_env, "CMAN_REGISTRY_MIRROR": f"http://{REGISTRY}"})
    assert got.returncode == 0, got.stderr
    assert len(json.loads(got.stdout)) == 1


def test_bad_input(quiet_env: dict[str, str]) -> None:
    assert_clean_error(cli("search", "busybox", env=quiet_env), 2, "no registry", "config.toml")
    mirror = {**quiet_env, "CMAN_REGISTRY_MIRROR": f"http://{REGISTRY}"}
    assert_clean_error(cli("search", "", env=mirror), 2, "TERM")
    assert_clean_error(cli("search", "a\x1bb", env=mirror), 2, "TERM")
    assert_clean_error(cli("search", "--limit", "0", "x", env=mirror), 2, "--limit")
    assert_clean_error(cli("search", "x", env={**quiet_env, "CMAN_REGISTRY_MIRROR": "127.0.0.1:5000"}), 2,
                       "CMAN_REGISTRY_MIRROR")
    assert_clean_error(cli("search", "x", env={**quiet_env, "CMAN_LXD_REMOTES": "{"}), 2, "CMAN_LXD_REMOTES")
    limit = cli("search", "--limit", "many", "x", env=mirror)
    assert limit.returncode == 2 and "Traceback" not in limit.stderr, limit.stderr


# -- LXD image servers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    if not ROOTFS.is_file():
        unavailable(f"test rootfs {ROOTFS} is missing: run scripts/setup-engines.sh")
    if shutil.which("openssl") is None:
        unavailable("openssl is needed for the image server's certificate")
    with serve(tmp_path_factory.mktemp("streams")) as srv:
        yield srv


def test_an_lxd_image_server(srv: ImageServer, quiet_env: dict[str, str]) -> None:
    env = {**quiet_env, **srv.env()}
    env.pop("CMAN_LXD_ENDPOINT")
    got = cli("search", "--json", srv.alias.partition("/")[0], env=env)
    assert got.returncode == 0, got.stderr
    hits = json.loads(got.stdout)
    assert hits == [{"source": f"lxd:{srv.remote}", "kind": "simplestreams",
                     "name": f"{srv.remote}:{srv.alias}", "repository": hits[0]["repository"],
                     "tags": [srv.alias]}]
    assert "/streams/v1/index.json" in srv.requests and "/streams/v1/images.json" in srv.requests
    both = cli("search", srv.alias.partition("/")[0], env={**env, "CMAN_REGISTRY_MIRROR": f"http://{REGISTRY}"})
    assert both.returncode == 0 and f"{srv.remote}:{srv.alias}" in both.stdout, both.stderr


def test_an_unpinned_image_server_is_one_line(srv: ImageServer, quiet_env: dict[str, str]) -> None:
    env = {**quiet_env, "CMAN_LXD_REMOTES": json.dumps({srv.remote: srv.url})}
    assert_clean_error(cli("search", "busybox", env=env), 5, f"lxd remote {srv.remote}", "certificate")
