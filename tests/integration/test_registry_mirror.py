"""``cman provision registry-mirror`` on raw LXC, end to end: a plain registry on a cman network of
the test's own that takes a push (skopeo, from the local registry on loopback) and lists it; a
pull-through cache of that first mirror (``--upstream``) that serves its image; an upstream that
does not answer, named as the cause; and reruns that change nothing.

The engine's own LXC path is used, so cman's registry image (``debian-registry:RELEASE``) is
found there, or imported from cman's bootstrap cache (built with debootstrap only when neither
has it); an image the test imported is removed again. Traffic stays on loopback and the test's
bridge: the host asks the mirrors, the cache asks the first mirror, and the upstream that does
not answer is the bridge's own gateway, on a closed port. Every container and the network are
named ``cmantest-<hex>`` and removed in teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import cman.backends
from cman.backends.lxc import LxcBackend
from cman.dockerhost.mirror import registry_target
from cman.errors import CmanError

from ..conftest import REGISTRY, REGISTRY_IMAGE, cli, require_root, unavailable
from .lxc_lab import free_subnet

pytestmark = [pytest.mark.engine, pytest.mark.provisioning]

RUN = f"cmantest-{secrets.token_hex(3)}"
PROVISION_TIMEOUT = 1800.0  # without the image anywhere, a first run bootstraps it (debootstrap)
REPO = "library/busybox"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
WRAPPER = """
import sys

import typer

import cman.cli as cli
import cman.cli.app as cli_app
from cman.cli.provision_mirror import register_mirror


def build_app(command=None):
    app = typer.Typer(pretty_exceptions_enable=False, rich_markup_mode=None)
    app.callback()(cli_app._global)
    group = typer.Typer()
    register_mirror(group)
    app.add_typer(group, name="provision")
    return app


cli_app.build_app = build_app
sys.exit(cli.main())
"""
"""cman's own main() (exit codes, error lines) with only ``provision registry-mirror``: the command
as it is whether or not cli/provision.py registers it yet."""


@dataclass
class Lab:
    network: str
    gateway: str
    made: list[str] = field(default_factory=list)

    def provision(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        if name not in self.made:
            self.made.append(name)
        env = {k: v for k, v in os.environ.items() if k != "CMAN_BACKEND"}
        return subprocess.run([sys.executable, "-c", WRAPPER, "--backend", "lxc", "provision", "registry-mirror",
                               name, "--network", self.network, "--json", *args], capture_output=True, text=True,
                              timeout=PROVISION_TIMEOUT, env=env, stdin=subprocess.DEVNULL)


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


def _get(url: str, accept: str | None = None) -> tuple[int, bytes]:
    """GET from this host, never through a proxy of the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with opener.open(request, timeout=10) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def _catalog(address: str) -> list[str]:
    status, body = _get(f"{address}/v2/_catalog")
    assert status == 200, (status, body)
    return list(json.loads(body)["repositories"])


def _no_proxy() -> dict[str, str]:
    """The environment without proxies: skopeo talks to loopback and the bridge only."""
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


def _push(host_port: str) -> None:
    """The local registry's busybox (on loopback) into the mirror, as library/busybox."""
    proc = subprocess.run(["skopeo", "copy", "-q", "--insecure-policy", "--src-tls-verify=false",
                           "--dest-tls-verify=false", f"docker://{REGISTRY_IMAGE}",
                           f"docker://{host_port}/{REPO}:latest"], capture_output=True, text=True, timeout=300,
                          env=_no_proxy())
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    status = LxcBackend.probe()
    if not status.reachable:
        unavailable(f"lxc: {status.problem} (fix: {status.fix})")
    require_root("LXC networks (bridges, iptables)")
    if shutil.which("skopeo") is None:
        unavailable("skopeo is not installed: run scripts/setup-engines.sh")
    if _get(f"http://{REGISTRY}/v2/cman/busybox/tags/list")[0] != 200:
        unavailable(f"the local registry {REGISTRY} has no cman/busybox: run scripts/setup-engines.sh")
    image = registry_target().name
    had_image = cli("image", "inspect", image, backend="lxc").returncode == 0
    subnet = free_subnet(set())
    made = Lab(f"{RUN}-net", str(next(subnet.hosts())))
    try:
        proc = cli("network", "create", made.network, "--subnet", str(subnet), backend="lxc")
        assert proc.returncode == 0, proc.stderr
        yield made
    finally:
        for name in made.made:
            cli("rm", "-f", name, backend="lxc")
        cli("network", "rm", "-f", made.network, backend="lxc")
        if not had_image:
            with contextlib.suppress(CmanError):
                cman.backends.load("lxc").image_remove(image, force=True)


@pytest.fixture(scope="module")
def plain(lab: Lab) -> dict[str, Any]:
    """A plain registry on the lab's network: the first run's JSON."""
    return _json(lab.provision(f"{RUN}-plain"))


def test_a_plain_registry_takes_a_push_and_a_rerun_changes_nothing(lab: Lab, plain: dict[str, Any]) -> None:
    steps = {s["name"]: s["status"] for s in plain["steps"]}
    assert steps == {"image": steps["image"], "container": "repaired", "config": "repaired", "registry": "repaired"}
    assert plain["changed"] is True and plain["upstream"] is None and plain["backend"] == "lxc"
    address, host_port = plain["address"], plain["host_port"]
    assert address == f"http://{host_port}" and host_port.endswith(":5000")
    assert plain["docker_host_args"] == ["--registry-mirror", address, "--insecure-registry", host_port]
    assert _catalog(address) == []
    _push(host_port)
    assert _catalog(address) == [REPO]
    again = _json(lab.provision(f"{RUN}-plain"))
    assert again["changed"] is False, again
    assert {s["status"] for s in again["steps"]} == {"ok"}
    assert (again["address"], again["host_port"]) == (address, host_port)
    assert _catalog(address) == [REPO]  # nothing restarted, nothing lost


def test_a_pull_through_cache_serves_its_upstreams_image(lab: Lab, plain: dict[str, Any], tmp_path: Path) -> None:
    _push(plain["host_port"])  # what the cache is to get from its upstream (again, when this test runs alone)
    first = _json(lab.provision(f"{RUN}-cache", "--upstream", plain["address"] + "/", "--port", "5001"))
    assert first["changed"] is True and first["upstream"] == plain["address"]
    address, host_port = first["address"], first["host_port"]
    assert host_port.endswith(":5001") and host_port != plain["host_port"]
    status, body = _get(f"{address}/v2/{REPO}/manifests/latest", MANIFEST)
    assert status == 200, body
    assert json.loads(body)["schemaVersion"] == 2
    proc = subprocess.run(["skopeo", "copy", "-q", "--insecure-policy", "--src-tls-verify=false",
                           f"docker://{host_port}/{REPO}:latest", f"dir:{tmp_path / 'busybox'}"],
                          capture_output=True, text=True, timeout=300, env=_no_proxy())
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 20
    while REPO not in _catalog(address) and time.monotonic() < deadline:  # the cache stores as it serves
        time.sleep(0.5)
    assert _catalog(address) == [REPO]
    again = _json(lab.provision(f"{RUN}-cache", "--upstream", plain["address"], "--port", "5001"))
    assert again["changed"] is False, again


def test_an_upstream_that_does_not_answer_is_named(lab: Lab) -> None:
    """The registry asks its upstream at start and exits when it cannot: exit 8, with the cause."""
    upstream = f"http://{lab.gateway}:9"  # this host, on the test's bridge: a closed port
    proc = lab.provision(f"{RUN}-dead", "--upstream", upstream)
    assert proc.returncode == 8, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("cman: provision step registry failed"), proc.stderr
    assert f"{upstream}/v2/" in last, last
