"""LXD clusters on a real three-member cluster (:mod:`.lxdcluster`): ``run``/``create
--target MEMBER`` places the instance on that member, ``ps`` shows its LOCATION, ``rm``
removes it, and ``engine status`` lists the members; ``--target`` is refused cleanly
where there is no cluster.

The cluster lives for this module only (about 3 s to build, 2 s to tear down); every
instance and image is named with the run's PREFIX.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from cman.backends import backend_class

from ..conftest import PREFIX, ROOTFS, assert_clean_error, cli, not_selected, unavailable
from .lxdcluster import Cluster, lxd_cluster

pytestmark = pytest.mark.engine

IMAGE = f"{PREFIX}-cluster-box"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    not_selected("lxd")
    if not ROOTFS.is_file():
        unavailable(f"test rootfs {ROOTFS} is missing: run scripts/setup-engines.sh")
    with lxd_cluster() as made:
        proc = cli("image", "import", str(ROOTFS), IMAGE, backend="lxd", env=made.env)
        assert proc.returncode == 0, proc.stderr
        yield made


def on(cluster: Cluster, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """cman against the cluster, over HTTPS to member 1."""
    return cli(*args, backend="lxd", env={**cluster.env, **kw.pop("env", {})}, **kw)


def test_engine_status_lists_the_members(cluster: Cluster) -> None:
    proc = on(cluster, "engine", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    [status] = json.loads(proc.stdout)
    members = status["cluster_members"]
    assert [m["name"] for m in members] == ["m1", "m2", "m3"], members
    assert {m["status"] for m in members} == {"online"}, members
    assert [m["url"] for m in members] == [f"https://{m.address}:8443" for m in cluster.members]
    assert any("database-leader" in m["roles"] for m in members), members
    human = on(cluster, "engine", "status")
    assert human.returncode == 0, human.stderr
    rows = human.stdout.split("cluster members:", 1)[1].splitlines()
    assert sum(1 for r in rows if r.split()[:2] in (["m1", "online"], ["m2", "online"], ["m3", "online"])) == 3, human.stdout


@pytest.mark.parametrize("member", ["m2", "m3"])
def test_run_target_places_the_instance(cluster: Cluster, member: str) -> None:
    name = f"{PREFIX}-on-{member}"
    try:
        proc = on(cluster, "run", "-d", "--target", member, "--name", name, IMAGE, "sleep", "300")
        assert proc.returncode == 0, proc.stderr
        record = cluster.query(f"/1.0/instances/{name}")
        assert isinstance(record, dict) and record["location"] == member, record
        assert record["status"] == "Running", record
        assert cluster.member_running(name) == member  # its lxc monitor is that member's daemon's
        listed = {c["name"]: c for c in json.loads(on(cluster, "ps", "--json").stdout)}
        assert listed[name]["location"] == member and listed[name]["state"] == "running", listed
        table = on(cluster, "ps").stdout.splitlines()
        assert table[0].split()[-1] == "LOCATION", table
        assert [row.split()[-1] for row in table if row.split()[1:2] == [name]] == [member], table
        rm = on(cluster, "rm", "-f", name)
        assert rm.returncode == 0, rm.stderr
        assert name not in {c["name"] for c in json.loads(on(cluster, "ps", "-a", "--json").stdout)}
        assert on(cluster, "inspect", name).returncode == 3
    finally:
        cluster.lxc("delete", "--force", name, check=False)


def test_create_target_and_start(cluster: Cluster) -> None:
    name = f"{PREFIX}-created"
    try:
        proc = on(cluster, "create", "--target", "m3", "--name", name, IMAGE, "sleep", "300")
        assert proc.returncode == 0, proc.stderr
        [info] = json.loads(on(cluster, "inspect", "--json", name).stdout)
        assert (info["location"], info["state"]) == ("m3", "created"), info
        assert on(cluster, "start", name).returncode == 0
        assert cluster.member_running(name) == "m3"
        assert on(cluster, "rm", "-f", name).returncode == 0
    finally:
        cluster.lxc("delete", "--force", name, check=False)


def test_target_unknown_member_is_a_clean_error(cluster: Cluster) -> None:
    name = f"{PREFIX}-nowhere"
    try:
        assert_clean_error(on(cluster, "create", "--target", "m9", "--name", name, IMAGE), 3,
                           "no such cluster member: m9")
        assert_clean_error(on(cluster, "run", "-d", "--target", "m9", "--name", name, IMAGE), 125,
                           "no such cluster member: m9")
        assert_clean_error(on(cluster, "create", "--target", "@nogroup", IMAGE), 3, "no such cluster group")
        assert_clean_error(on(cluster, "create", "--target", "m1/../x", IMAGE), 2, "--target")
        assert name not in {c["name"] for c in json.loads(on(cluster, "ps", "-a", "--json").stdout)}
    finally:
        cluster.lxc("delete", "--force", name, check=False)


@pytest.mark.parametrize("engine", ["lxd", "lxc", "docker"])
def test_target_without_a_cluster_is_refused(engine: str) -> None:
    """A non-clustered LXD (the system daemon), LXC and Docker refuse --target up front, as a
    feature they lack (exit 6; `run` reports it as 125), and create nothing."""
    not_selected(engine)
    env = {"CMAN_LXD_ENDPOINT": ""}
    status = backend_class(engine).probe()
    if not status.reachable:
        unavailable(f"{engine}: {status.problem} (fix: {status.fix})")
    name = f"{PREFIX}-{engine}-target"
    create = cli("create", "--target", "m1", "--name", name, "cman-no-such-image", backend=engine, env=env)
    assert_clean_error(create, 6, "cluster")
    if engine == "lxd":
        assert "not a cluster member" in create.stderr
    run = cli("run", "--rm", "--target", "m1", "--name", name, "cman-no-such-image", "true", backend=engine, env=env)
    assert_clean_error(run, 125, "cluster")
    listed = cli("ps", "-a", "--json", backend=engine, env=env)
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert name not in {c["name"] for c in items}
    assert all(c["location"] is None for c in items), items  # no cluster, no location
    assert "LOCATION" not in cli("ps", "-a", backend=engine, env=env).stdout.splitlines()[0]


def test_a_members_local_socket_works_too(cluster: Cluster) -> None:
    """On a member itself (its LXD_DIR socket, the stdlib path): members and placement the same."""
    env = {"CMAN_LXD_ENDPOINT": "", "LXD_DIR": str(cluster.members[1].lxd_dir)}
    name = f"{PREFIX}-local-m1"
    try:
        [status] = json.loads(cli("engine", "status", "--json", backend="lxd", env=env).stdout)
        assert status["endpoint"].startswith("unix://") and len(status["cluster_members"]) == 3, status
        proc = cli("run", "-d", "--target", "m1", "--name", name, IMAGE, "sleep", "300", backend="lxd", env=env)
        assert proc.returncode == 0, proc.stderr
        assert cluster.member_running(name) == "m1"
        listed = {c["name"]: c for c in json.loads(cli("ps", "--json", backend="lxd", env=env).stdout)}
        assert listed[name]["location"] == "m1", listed
        assert cli("rm", "-f", name, backend="lxd", env=env).returncode == 0
    finally:
        cluster.lxc("delete", "--force", name, check=False)
