"""Docker inside LXC and LXD, end to end through the real CLI: a registry mirror provisioned in its
own LXC container, an image pushed into it, then `cman provision docker-host` on raw LXC and on
LXD pointed at that mirror, and the inner Docker pulling the image through it.

Then idempotence: a rerun on a healthy host changes nothing; after three injected faults
(dockerd stopped, daemon.json removed, the cgroup hierarchies unmounted) `cman doctor
docker-host` names each one, a rerun repairs exactly those, and the doctor finds nothing.

The docker hosts get the mirror's network and their own bridge's gateway as DNS server, so
nothing inside ever asks a resolver or registry outside this machine. The two bridges are
routed to each other by two DOCKER-USER rules of the test's own (the routing a site has
between its bridges: Docker's FORWARD policy DROP on this machine would block it), removed
in teardown with every container, network and image the test made. The Debian rootfs with
docker.io is built once (debootstrap, from the host's Debian mirror) and stays in cman's
bootstrap cache for the rest of the run.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import cman.backends
from cman.dockerhost.mirror import probe, registry_target
from cman.dockerhost.provision import docker_target
from cman.errors import CmanError

from ..conftest import NET_PREFIX, PREFIX, REGISTRY_IMAGE, assert_clean_error, cli, require_root, unavailable
from .lxc_lab import free_subnet

pytestmark = [pytest.mark.engine, pytest.mark.provisioning]

WORDS = "cman-through-the-mirror"
ENGINES = ("lxc", "lxd")
PROVISION_TIMEOUT = 1800.0  # a first run builds the Debian rootfs with docker.io (about 2 minutes here)


@dataclass
class Site:
    lxc_net: str
    lxd_net: str
    gateways: dict[str, str]
    mirror: str
    mirror_host: str
    image: str
    rules: list[list[str]] = field(default_factory=list)
    hosts: dict[str, str] = field(default_factory=dict)


def _reachable(name: str) -> None:
    status = cman.backends.backend_class(name).probe()
    if not status.reachable:
        unavailable(f"{name}: {status.problem} (fix: {status.fix})")


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


def _network(backend: str, name: str, avoid: set[str]) -> str:
    subnet = free_subnet(avoid)
    proc = cli("network", "create", name, "--subnet", str(subnet), backend=backend)
    assert proc.returncode == 0, proc.stderr
    return str(next(subnet.hosts()))


def _bridge(backend: str, name: str) -> str:
    data = json.loads(cli("network", "inspect", name, "--json", backend=backend).stdout)
    return str((data[0] if isinstance(data, list) else data)["bridge"])


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    require_root("bridges, iptables and debootstrap")
    for name in ENGINES:
        _reachable(name)
    image = docker_target().name
    had_image = {b: cli("image", "inspect", image, backend=b).returncode == 0 for b in ENGINES}
    mirror_image = registry_target().name
    had_mirror_image = cli("image", "inspect", mirror_image, backend="lxc").returncode == 0
    avoid: set[str] = set()
    lxc_net, lxd_net = f"{NET_PREFIX}dh", f"{NET_PREFIX}dl"
    made = Site(lxc_net, lxd_net, {}, "", "", image)
    mirror_name = f"{PREFIX}-mirror"
    try:
        made.gateways["lxc"] = _network("lxc", lxc_net, avoid)
        made.gateways["lxd"] = _network("lxd", lxd_net, avoid)
        a, b = _bridge("lxc", lxc_net), _bridge("lxd", lxd_net)
        for src, dst in ((a, b), (b, a)):
            rule = ["DOCKER-USER", "-i", src, "-o", dst, "-m", "comment", "--comment", f"{PREFIX}-route", "-j", "ACCEPT"]
            subprocess.run(["iptables", "-I", *rule], check=True, timeout=30)
            made.rules.append(rule)
        out = _json(cli("provision", "registry-mirror", mirror_name, "--network", lxc_net, "--json",
                        backend="lxc", timeout=PROVISION_TIMEOUT))
        made.mirror, made.mirror_host = str(out["address"]), str(out["host_port"])
        assert probe(f"{made.mirror}/v2/_catalog")[0] == 200  # the mirror, on our bridge, never through a proxy
        repo = f"library/{PREFIX}-box"
        subprocess.run(["skopeo", "copy", "-q", "--insecure-policy", "--src-tls-verify=false",
                        "--dest-tls-verify=false", f"docker://{REGISTRY_IMAGE}",
                        f"docker://{made.mirror_host}/{repo}:latest"], check=True, timeout=300)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{made.mirror}/v2/_catalog", timeout=10) as answer:
            assert repo in json.load(answer)["repositories"]
        yield made
    finally:
        for backend, host in made.hosts.items():
            cli("rm", "-f", host, backend=backend)
        cli("rm", "-f", mirror_name, backend="lxc")
        for rule in made.rules:
            subprocess.run(["iptables", "-D", *rule], check=False, timeout=30)
        cli("network", "rm", "-f", lxc_net, backend="lxc")
        cli("network", "rm", "-f", lxd_net, backend="lxd")
        for backend in ENGINES:
            if not had_image[backend]:
                with contextlib.suppress(CmanError):
                    cman.backends.load(backend).image_remove(image, force=True)
        if not had_mirror_image:
            with contextlib.suppress(CmanError):
                cman.backends.load("lxc").image_remove(mirror_image, force=True)


def _provision(site: Site, backend: str, *more: str) -> subprocess.CompletedProcess[str]:
    name = site.hosts.setdefault(backend, f"{PREFIX}-dh-{backend}")
    return cli("provision", "docker-host", name, "--network", site.lxc_net if backend == "lxc" else site.lxd_net,
               "--registry-mirror", site.mirror, "--insecure-registry", site.mirror_host,
               "--dns", site.gateways[backend], "--check-image", f"{PREFIX}-box", *more,
               backend=backend, timeout=PROVISION_TIMEOUT)


@pytest.mark.parametrize("backend", ENGINES)
def test_a_docker_host_pulls_through_the_mirror(site: Site, backend: str, tmp_path: Path) -> None:
    """On LXC also with --ssh: the key given is authorized, and the inner Docker answers over SSH."""
    key = tmp_path / "id"
    more = []
    if backend == "lxc":
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        more = ["--ssh", "--ssh-key", f"{key}.pub"]
    out = _json(_provision(site, backend, "--json", *more))
    steps = {s["name"]: s for s in out["steps"]}  # type: ignore[attr-defined]
    assert steps["container"]["status"] == "repaired" and steps["check"]["status"] == "ok"
    assert out["changed"] is True
    name = site.hosts[backend]
    # the image exists only in the mirror (docker.io/library/NAME): the inner Docker got it there
    proc = cli("exec", name, "docker", "run", "--rm", f"{PREFIX}-box", "echo", WORDS, backend=backend, timeout=300)
    assert (proc.returncode, proc.stdout) == (0, f"{WORDS}\n"), proc.stderr
    daemon = json.loads(cli("exec", name, "cat", "/etc/docker/daemon.json", backend=backend).stdout)
    assert daemon["registry-mirrors"] == [site.mirror.rstrip("/") + "/"]
    assert daemon["insecure-registries"] == [site.mirror_host] and daemon["dns"] == [site.gateways[backend]]
    if backend == "lxc":
        where = steps["ssh"]["detail"].rsplit("ssh ", 1)[-1]
        assert where.startswith("root@"), steps["ssh"]
        proc = subprocess.run(["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                               "-o", f"UserKnownHostsFile={tmp_path / 'known'}", "-o", "ConnectTimeout=10", where,
                               "docker", "info", "--format", "{{.Driver}}"], capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout) == (0, "overlay2\n"), proc.stderr


FAULTS = {
    "dockerd": ["/etc/init.d/docker", "stop"],
    "daemon-json": ["rm", "/etc/docker/daemon.json"],
    "cgroup-mounts": ["sh", "-c", "umount -l /sys/fs/cgroup 2>/dev/null || mount -t tmpfs cman-fault /sys/fs/cgroup"],
}
REPAIRED_BY = {"dockerd": "dockerd", "daemon-json": "daemon.json", "cgroup-mounts": "cgroups"}


def _problems(backend: str, name: str) -> tuple[tuple[int, set[str]], str]:
    """(doctor's exit code, the names of its problems), and their details for a failure message."""
    proc = cli("doctor", "docker-host", name, "--json", backend=backend, timeout=300)
    data = json.loads(proc.stdout)
    assert data["healthy"] is (proc.returncode == 0), proc.stdout
    problems = [f for f in data["findings"] if f["status"] == "problem"]
    return (proc.returncode, {f["name"] for f in problems}), "; ".join(f"{f['name']}: {f['detail']}" for f in problems)


@pytest.mark.parametrize("backend", ENGINES)
def test_a_rerun_changes_nothing_then_repairs_what_was_broken(site: Site, backend: str) -> None:
    if backend not in site.hosts:
        pytest.fail(f"no docker host on {backend}: test_a_docker_host_pulls_through_the_mirror failed first")
    name = site.hosts[backend]
    again = _provision(site, backend)
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout
    found, why = _problems(backend, name)
    assert found == (0, set()), why
    for argv in FAULTS.values():
        proc = cli("exec", name, *argv, backend=backend)
        assert proc.returncode == 0, (argv, proc.stderr)
    ps = cli("exec", name, "sh", "-c", "ps -eo pid,ppid,args | grep [d]ocker; cat /var/run/docker*.pid", backend=backend)
    found, why = _problems(backend, name)
    assert found == (1, set(FAULTS)), (why, ps.stdout)
    out = _json(_provision(site, backend, "--json"))
    repaired = {s["name"] for s in out["steps"] if s["status"] == "repaired"}  # type: ignore[attr-defined]
    assert repaired == set(REPAIRED_BY.values())
    found, why = _problems(backend, name)
    assert found == (0, set()), why


@pytest.mark.parametrize(("args", "needle"), [
    (["--registry-mirror", "ftp://10.0.0.1"], "--registry-mirror"),
    (["--insecure-registry", "http://10.0.0.1:5000"], "--insecure-registry"),
    (["--dns", "resolver.example"], "dns"),
    (["--ssh-key", "/nonexistent.pub"], "--ssh"),
    (["--check-image", "Not/A Ref"], "image"),
    (["--network", "-bad"], "network"),
])
def test_bad_input_is_refused_before_anything_is_made(args: list[str], needle: str) -> None:
    name = f"{PREFIX}-refused"
    proc = cli("provision", "docker-host", name, *args, backend="lxc")
    assert_clean_error(proc, 2, needle)
    assert cli("inspect", name, backend="lxc").returncode == 3


def test_doctor_refuses_docker_and_names_a_missing_container() -> None:
    assert_clean_error(cli("doctor", "docker-host", f"docker:{PREFIX}-x"), 6, "system containers")
    assert_clean_error(cli("doctor", "docker-host", f"lxc:{PREFIX}-x"), 3, "no such container")
