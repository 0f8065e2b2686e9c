"""OCI registry pulls on every engine, from the local registry (127.0.0.1:5000) that
scripts/setup-engines.sh fills: cman/configured:{latest,extra}, cman/debian:bookworm,
library/cmantestbox. LXD and LXC pull through skopeo + umoci into a per-host OCI layout and
follow the image's config; Docker pulls itself. Nothing here reaches beyond loopback."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import cman.backends
from tests.conftest import PREFIX, assert_clean_error, cli, unavailable

REGISTRY = "127.0.0.1:5000"
CONFIGURED = f"{REGISTRY}/cman/configured:latest"
SIBLING = f"{REGISTRY}/cman/configured:extra"
DEBIAN = f"{REGISTRY}/cman/debian:bookworm"
ENGINES = ("docker", "lxd", "lxc")
EXPECTED = ["greeting=hello from the image config second=two", "cwd=/srv/app", "uid=1234 gid=2345", "args=one two"]


def _require(name: str) -> None:
    status = cman.backends.backend_class(name).probe()
    if not status.reachable:
        unavailable(f"{name}: {status.problem} (fix: {status.fix})")


@pytest.fixture(scope="module", autouse=True)
def registry() -> None:
    for repo, tag in (("cman/configured", "extra"), ("cman/debian", "bookworm"), ("library/cmantestbox", "latest")):
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
            with opener.open(f"http://{REGISTRY}/v2/{repo}/tags/list", timeout=5) as answer:
                if f'"{tag}"' not in answer.read().decode():
                    unavailable(f"{repo}:{tag} is not in the local registry: run scripts/setup-engines.sh")
        except OSError as err:
            unavailable(f"the local registry {REGISTRY} does not answer ({err}): run scripts/setup-engines.sh")


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, str]:
    """A private OCI layout, so layer counts do not depend on earlier pulls."""
    return {"CMAN_OCI_DIR": str(tmp_path / "oci")}


@pytest.fixture
def pulled() -> Iterator[list[tuple[str, str]]]:
    """(backend, image) pairs to remove afterwards (LXD and LXC; Docker's copies are setup's)."""
    made: list[tuple[str, str]] = []
    yield made
    for backend, image in made:
        with contextlib.suppress(Exception):
            cli("image", "rm", "--force", image, backend=backend, timeout=120)


@pytest.mark.parametrize("backend", ENGINES)
def test_debian_from_the_registry(backend: str, layout: dict[str, str], pulled: list[tuple[str, str]]) -> None:
    _require(backend)
    if backend != "docker":
        pulled.append((backend, DEBIAN))
    got = cli("pull", DEBIAN, backend=backend, env=layout, timeout=600)
    assert got.returncode == 0, got.stderr
    run = cli("run", "--rm", DEBIAN, "cat", "/etc/debian_version", backend=backend, env=layout, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("12."), run.stdout


def test_configured_image_same_output_everywhere(layout: dict[str, str], pulled: list[tuple[str, str]]) -> None:
    outputs = {}
    for backend in ENGINES:
        _require(backend)
        if backend != "docker":
            pulled.append((backend, CONFIGURED))
        run = cli("run", "--rm", CONFIGURED, backend=backend, env=layout, timeout=300)
        assert run.returncode == 0, (backend, run.stderr)
        outputs[backend] = run.stdout.splitlines()
    assert outputs["docker"] == EXPECTED
    assert outputs["lxd"] == outputs["docker"] and outputs["lxc"] == outputs["docker"]
    # a given command replaces Cmd and keeps the Entrypoint, as Docker does
    for backend in ("lxc", "docker"):
        run = cli("run", "--rm", "-e", "CMAN_SECOND=mine", CONFIGURED, "x", backend=backend, env=layout)
        assert run.stdout.splitlines()[0].endswith("second=mine") and run.stdout.splitlines()[-1] == "args=x"


def test_inspect_shows_the_config_the_same_way(layout: dict[str, str], pulled: list[tuple[str, str]]) -> None:
    import json

    configs = {}
    for backend in ENGINES:
        _require(backend)
        if backend != "docker":
            pulled.append((backend, CONFIGURED))
        assert cli("pull", CONFIGURED, backend=backend, env=layout).returncode == 0
        got = cli("image", "inspect", "--json", CONFIGURED, backend=backend)
        assert got.returncode == 0, got.stderr
        configs[backend] = json.loads(got.stdout)["extra"]["config"]
    assert configs["docker"]["user"] == "cmanuser" and configs["docker"]["workdir"] == "/srv/app"
    assert configs["lxd"] == configs["docker"] and configs["lxc"] == configs["docker"]


@pytest.mark.parametrize("backend", ["lxc", "lxd"])
def test_sibling_fetches_only_the_new_layer(backend: str, layout: dict[str, str],
                                             pulled: list[tuple[str, str]]) -> None:
    """How we know: the layout's blobs before and after each copy, reported per layer as
    "Pull complete" (fetched) or "Already exists"."""
    _require(backend)
    pulled += [(backend, CONFIGURED), (backend, SIBLING)]
    first = cli("pull", CONFIGURED, backend=backend, env=layout)
    assert first.returncode == 0, first.stderr
    base_layers = first.stderr.count(": Pull complete")
    assert base_layers >= 2 and ": Already exists" not in first.stderr, first.stderr
    second = cli("pull", SIBLING, backend=backend, env=layout)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count(": Pull complete") == 1, second.stderr
    assert second.stderr.count(": Already exists") == base_layers, second.stderr
    again = cli("pull", SIBLING, backend=backend, env=layout)
    assert "image is up to date" in again.stderr and ": Pull complete" not in again.stderr, again.stderr
    run = cli("run", "--rm", SIBLING, "/bin/cat", "/srv/app/extra.txt", backend=backend, env=layout)
    assert run.stdout.splitlines()[-1] == "args=/bin/cat /srv/app/extra.txt"  # Entrypoint kept


@pytest.fixture
def short_name() -> Iterator[str]:
    """``library/PREFIX-box:latest`` in the local registry (a copy of setup's cmantestbox):
    a Docker Hub short name that only the mirror has. Removed afterwards from the registry
    and from every engine."""
    name = f"{PREFIX}-box"
    if shutil.which("skopeo") is None:
        unavailable("skopeo is not installed: run scripts/setup-engines.sh")
    dest = f"docker://{REGISTRY}/library/{name}:latest"
    try:
        got = subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
                              "--dest-tls-verify=false", f"docker://{REGISTRY}/library/cmantestbox:latest", dest],
                             capture_output=True, text=True, timeout=120)
        if got.returncode != 0:
            unavailable(f"cannot push a test image to {REGISTRY}: {got.stderr.strip()}")
        yield name
    finally:
        for backend, image in (("docker", f"{name}:latest"), ("docker", f"{REGISTRY}/library/{name}:latest"),
                               ("lxd", f"docker.io/library/{name}:latest"), ("lxc", f"docker.io/library/{name}:latest")):
            with contextlib.suppress(Exception):
                cli("image", "rm", "--force", image, backend=backend, timeout=120)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["skopeo", "--insecure-policy", "delete", "--tls-verify=false", dest],
                           capture_output=True, timeout=120)


def test_short_name_through_a_mirror_on_every_engine(layout: dict[str, str], short_name: str) -> None:
    """With cman's mirror configured, a Docker Hub short name comes from the mirror on all three
    engines, Docker included (cman pulls MIRROR/library/NAME and tags it NAME, whatever the
    daemon's own registry-mirrors say), and runs the same."""
    env = {**layout, "CMAN_REGISTRY_MIRROR": f"http://{REGISTRY}"}
    outputs = {}
    for backend in ENGINES:
        _require(backend)
        run = cli("run", "--rm", short_name, backend=backend, env=env, timeout=300)
        assert run.returncode == 0, (backend, run.stderr)
        outputs[backend] = run.stdout.splitlines()
    assert outputs == {backend: EXPECTED for backend in ENGINES}
    tags = cli("images", "--json", backend="docker")
    names = [t for image in json.loads(tags.stdout) for t in image["tags"]]
    assert f"{short_name}:latest" in names, names
    assert f"{REGISTRY}/library/{short_name}:latest" not in names, names  # only docker.io's name is kept
    again = cli("pull", short_name, backend="docker", env=env)
    assert again.returncode == 0 and again.stdout == f"docker:{short_name}\n", again.stderr
    assert f"from the registry mirror {REGISTRY}" in again.stderr, again.stderr


def test_docker_short_name_missing_on_the_mirror(layout: dict[str, str]) -> None:
    _require("docker")
    env = {**layout, "CMAN_REGISTRY_MIRROR": f"http://{REGISTRY}"}
    assert_clean_error(cli("pull", f"{PREFIX}-not-there", backend="docker", env=env), 3, f"{PREFIX}-not-there")
    dead = cli("pull", f"{PREFIX}-not-there", backend="docker", env={**env, "CMAN_REGISTRY_MIRROR": "http://127.0.0.1:9"})
    assert_clean_error(dead, 5, "127.0.0.1:9")


@pytest.mark.parametrize("backend", ["lxc", "lxd"])
def test_bad_input_is_one_line(backend: str, layout: dict[str, str], tmp_path: Path) -> None:
    _require(backend)
    assert_clean_error(cli("pull", f"{REGISTRY}/cman/Upper:1", backend=backend, env=layout), 2, "invalid")
    assert_clean_error(cli("pull", "cmantestbox", backend=backend,
                           env={**layout, "CMAN_REGISTRY_MIRROR": "127.0.0.1:5000"}), 2, "CMAN_REGISTRY_MIRROR")
    conf = tmp_path / "xdg" / "cman" / "config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text("registry_mirrors = [1]\n")
    assert_clean_error(cli("pull", "cmantestbox", backend=backend,
                           env={**layout, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}), 2, "config.toml")
    assert_clean_error(cli("pull", f"{REGISTRY}/cman/{PREFIX}-missing:1", backend=backend, env=layout), 3)
