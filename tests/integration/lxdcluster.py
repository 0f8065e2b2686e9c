"""A real three-member LXD cluster on this machine, as LXD's own test suite builds one
(test/includes/clustering.sh: ``setup_clustering_bridge``, ``setup_clustering_netns``,
``spawn_lxd_and_bootstrap_cluster``, ``spawn_lxd_and_join_cluster``).

- A bridge of the test's own with a /24 that overlaps no route of the host; bridged traffic
  between its ports is accepted ahead of Docker's FORWARD DROP (br_netfilter is on here).
- Per member, a holder process (``unshare -m -n``) keeps a network namespace and a private
  mount namespace with a /sys of that namespace (the cgroup mounts moved into it), joined to
  the bridge by a veth. The ``lxd`` daemon runs in both (``nsenter -n -m``) with its own
  ``LXD_DIR`` under /tmp/cmantest-..., its own HTTPS address on the bridge, and the dead
  proxy of scripts/setup-engines.sh: no route and no proxy lead off the machine. Whatever
  it mounts (shmounts, devlxd, the storage pool) stays in that mount namespace.
- Member 1 bootstraps from a preseed (a ``dir`` pool, a default profile without a NIC);
  members 2 and 3 join with a join token. A client certificate made with openssl is
  trusted, and :attr:`Cluster.env` points cman at member 1 over HTTPS.

:func:`lxd_cluster` always tears everything down: instances force-deleted, daemons stopped
(SIGTERM, then SIGKILL by PID), anything left in a member's namespaces killed, the holders
killed, the veths, bridge and FORWARD rule deleted, stray mounts under the folder unmounted
and the folder removed. Nothing here touches the system LXD (/var/lib/lxd).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cman._sys import unixhttp

from ..conftest import NET_PREFIX, PREFIX, require_root, unavailable

TOOLS = ("lxd", "lxc", "unshare", "nsenter", "ip", "iptables", "openssl")
DEAD_PROXY = "http://127.0.0.1:9"
PORT = 8443
READY_TIMEOUT = 60

HOLDER = """set -e
mount --move /sys /mnt
umount -l /proc
mount -t sysfs sysfs /sys
mount --move /mnt/fs/cgroup /sys/fs/cgroup
mount -t proc proc /proc
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true
umount -l /mnt
exec sleep infinity
"""
"""The namespaces' holder, as clustering.sh sets them up: a /sys of the new network namespace
with the host's cgroup hierarchies moved into it, then a sleep whose PID names both."""


@dataclass
class Member:
    name: str
    address: str
    lxd_dir: Path
    holder: subprocess.Popen[bytes] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    veth: str = ""

    @property
    def socket(self) -> str:
        return str(self.lxd_dir / "unix.socket")


@dataclass
class Cluster:
    folder: Path
    bridge: str
    subnet: ipaddress.IPv4Network
    members: list[Member] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """CMAN_LXD_* for cman: member 1 over HTTPS, a trusted client certificate, the cluster's
    certificate pinned."""
    forward_rule: bool = False

    def lxc(self, *args: str, member: int = 0, check: bool = True, input: str | None = None,  # noqa: A002
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The ``lxc`` client on a member's local socket."""
        env = {**os.environ, "LXD_DIR": str(self.members[member].lxd_dir)}
        proc = subprocess.run(["lxc", *args], capture_output=True, text=True, env=env, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"lxc {' '.join(args)} on {self.members[member].name}: {proc.stderr.strip()}")
        return proc

    def query(self, path: str, member: int = 0) -> object:
        """GET ``path`` on a member's local socket: the ``metadata``."""
        return unixhttp.get_json(self.members[member].socket, path, timeout=30)["metadata"]

    def member_running(self, instance: str) -> str | None:
        """The member whose daemon runs ``instance``, from the host's process table: the
        instance's ``[lxc monitor] LXD_DIR/containers NAME`` process names that member's folder."""
        for member in self.members:
            wanted = f"{member.lxd_dir}/containers {instance}"
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    if wanted in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                        return member.name
        return None


def _run(argv: list[str], *, input: str | None = None, env: dict[str, str] | None = None,  # noqa: A002
         timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, env=env, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.254.0.0/16 that overlaps no route of the host."""
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    used = []
    for route in routes:
        dst = route.get("dst", "")
        with contextlib.suppress(ValueError):
            if dst and dst != "default":
                used.append(ipaddress.ip_network(dst, strict=False))
    for third in random.sample(range(256), 256):
        candidate = ipaddress.ip_network(f"10.254.{third}.0/24")
        if not any(candidate.overlaps(u) for u in used if u.version == 4):
            return candidate
    raise AssertionError("no free /24 in 10.254.0.0/16 for the cluster's bridge")


def _daemon_env(lxd_dir: Path, subnet: ipaddress.IPv4Network) -> dict[str, str]:
    """The daemon's environment: its own LXD_DIR and the dead proxy (LXD fetches instance types
    from the Internet at start-up), with the cluster's subnet reached directly."""
    no_proxy = f"127.0.0.1,localhost,::1,{subnet}"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "LXD_DIR"}
    env.update({"LXD_DIR": str(lxd_dir), "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "NO_PROXY": no_proxy,
                "http_proxy": DEAD_PROXY, "https_proxy": DEAD_PROXY, "no_proxy": no_proxy})
    return env


def _wait_holder(member: Member) -> None:
    """The holder is ready once it runs ``sleep`` (its mounts are made)."""
    assert member.holder is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if member.holder.poll() is not None:
            log = (member.lxd_dir.parent / f"{member.name}-holder.log").read_text(errors="replace")
            raise AssertionError(f"the namespace holder of {member.name} exited: {log.strip()}")
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{member.holder.pid}/exe").endswith("/sleep"):
                return
        time.sleep(0.05)
    raise AssertionError(f"the namespace holder of {member.name} did not get ready in 15 s")


def _spawn(cluster: Cluster, member: Member, index: int) -> None:
    """The member's namespaces, its veth on the bridge, and its daemon."""
    member.lxd_dir.mkdir(mode=0o711, parents=True)
    with open(cluster.folder / f"{member.name}-holder.log", "wb") as log:
        member.holder = subprocess.Popen(["unshare", "-m", "-n", "sh", "-c", HOLDER], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, cwd="/", start_new_session=True)
    _wait_holder(member)
    pid = str(member.holder.pid)
    member.veth, peer = f"{NET_PREFIX}c{index}", f"{NET_PREFIX}p{index}"
    _run(["ip", "link", "add", member.veth, "type", "veth", "peer", "name", peer])
    _run(["ip", "link", "set", "dev", peer, "netns", pid])
    _run(["ip", "link", "set", "dev", member.veth, "master", cluster.bridge, "up"])
    prefix = cluster.subnet.prefixlen
    _run(["nsenter", "-t", pid, "-n", "ip", "-batch", "-"], input=(
        f"link set dev lo up\nlink set dev {peer} name eth0\nlink set dev eth0 up\n"
        f"addr add {member.address}/{prefix} dev eth0\n"))
    with open(cluster.folder / f"{member.name}-lxd.out", "wb") as out:
        member.daemon = subprocess.Popen(
            ["nsenter", "-t", pid, "-n", "-m", "lxd", "--group", "root", "--logfile", str(member.lxd_dir / "lxd.log")],
            env=_daemon_env(member.lxd_dir, cluster.subnet), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            cwd="/", start_new_session=True)


def _wait_ready(member: Member) -> None:
    proc = _run(["lxd", "waitready", f"--timeout={READY_TIMEOUT}"], env={**os.environ, "LXD_DIR": str(member.lxd_dir)},
                timeout=READY_TIMEOUT + 10, check=False)
    if proc.returncode != 0:
        log = (member.lxd_dir / "lxd.log").read_text(errors="replace") if (member.lxd_dir / "lxd.log").exists() else ""
        raise AssertionError(f"lxd of {member.name} did not get ready: {proc.stderr.strip()}\n{log[-2000:]}")


def _bootstrap(cluster: Cluster) -> None:
    first = cluster.members[0]
    preseed = f"""config:
  core.https_address: {first.address}:{PORT}
  images.auto_update_interval: 0
storage_pools:
- name: data
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: data
      type: disk
cluster:
  server_name: {first.name}
  enabled: true
"""
    _run(["lxd", "init", "--preseed"], input=preseed, env={**os.environ, "LXD_DIR": str(first.lxd_dir)})


def _join(cluster: Cluster, member: Member) -> None:
    first = cluster.members[0]
    token = cluster.lxc("cluster", "add", "--quiet", member.name).stdout.strip()
    cert = (first.lxd_dir / "cluster.crt").read_text()
    indented = "".join(f"    {line}\n" for line in cert.strip().splitlines())
    preseed = f"""cluster:
  enabled: true
  server_name: {member.name}
  server_address: {member.address}:{PORT}
  cluster_address: {first.address}:{PORT}
  cluster_certificate: |
{indented}  cluster_token: {token}
  member_config:
  - entity: storage-pool
    name: data
    key: source
    value: ""
"""
    _run(["lxd", "init", "--preseed"], input=preseed, env={**os.environ, "LXD_DIR": str(member.lxd_dir)},
         timeout=120)


def _trust_client(cluster: Cluster) -> None:
    crt, key = cluster.folder / "client.crt", cluster.folder / "client.key"
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1", "-nodes",
          "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", f"/CN={PREFIX}-cluster-client"])
    cluster.lxc("config", "trust", "add", str(crt), "--name", f"{PREFIX}-client")
    cluster.env = {
        "CMAN_LXD_ENDPOINT": f"https://{cluster.members[0].address}:{PORT}",
        "CMAN_LXD_CERT": str(crt),
        "CMAN_LXD_KEY": str(key),
        "CMAN_LXD_VERIFY": str(cluster.members[0].lxd_dir / "cluster.crt"),
    }


@contextlib.contextmanager
def lxd_cluster(size: int = 3) -> Iterator[Cluster]:
    """A running ``size``-member cluster, torn down afterwards whatever happened."""
    require_root("an LXD cluster in network namespaces")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        unavailable(f"an LXD cluster needs {', '.join(missing)}")
    folder = Path(f"/tmp/{PREFIX}-lxdcluster")
    subnet = _free_subnet()
    hosts = list(subnet.hosts())
    cluster = Cluster(folder, f"{NET_PREFIX}cb", subnet)
    cluster.members = [Member(f"m{i}", str(hosts[9 + i]), folder / f"m{i}") for i in range(1, size + 1)]
    try:
        folder.mkdir(mode=0o711)  # traversable: unprivileged containers reach their rootfs through it
        _run(["ip", "link", "add", cluster.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{hosts[0]}/{subnet.prefixlen}", "dev", cluster.bridge])
        _run(["ip", "link", "set", "dev", cluster.bridge, "up"])
        _run(["iptables", "-w", "-I", "FORWARD", "-i", cluster.bridge, "-o", cluster.bridge, "-j", "ACCEPT"])
        cluster.forward_rule = True
        for index, member in enumerate(cluster.members, start=1):
            _spawn(cluster, member, index)
        for member in cluster.members:
            _wait_ready(member)
        _bootstrap(cluster)
        for member in cluster.members[1:]:
            _join(cluster, member)
        _trust_client(cluster)
        yield cluster
    finally:
        _teardown(cluster)


# -- teardown: every step runs, whatever failed before ------------------------------------------


def _teardown(cluster: Cluster) -> None:
    with contextlib.suppress(Exception):
        _delete_instances(cluster)
    for member in cluster.members:
        if member.daemon is not None and member.daemon.poll() is None:
            member.daemon.send_signal(signal.SIGTERM)
    for member in cluster.members:
        if member.daemon is not None:
            try:
                member.daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                member.daemon.kill()
                member.daemon.wait(timeout=10)
    for member in cluster.members:
        if member.holder is not None:
            _kill_namespace(member.holder.pid)
            member.holder.kill()
            member.holder.wait(timeout=10)
    for member in cluster.members:
        if member.veth and Path(f"/sys/class/net/{member.veth}").exists():
            _run(["ip", "link", "del", member.veth], check=False)
    if Path(f"/sys/class/net/{cluster.bridge}").exists():
        _run(["ip", "link", "del", cluster.bridge], check=False)
    if cluster.forward_rule:
        _run(["iptables", "-w", "-D", "FORWARD", "-i", cluster.bridge, "-o", cluster.bridge, "-j", "ACCEPT"],
             check=False)
    _unmount_under(cluster.folder)
    shutil.rmtree(cluster.folder, ignore_errors=True)


def _delete_instances(cluster: Cluster) -> None:
    """Instances a failed test left: force-deleted through member 1 (stopping the daemons would
    wait for each one's clean shutdown)."""
    if not cluster.members or not Path(cluster.members[0].socket).exists():
        return
    names = cluster.query("/1.0/instances")
    assert isinstance(names, list)
    for url in names:
        cluster.lxc("delete", "--force", str(url).rsplit("/", 1)[-1], check=False)


def _kill_namespace(holder: int) -> None:
    """SIGKILL what still runs in a holder's mount namespace (a daemon's helpers, an instance's
    ``lxc monitor``) and the children of those (an instance's init, which takes its PID
    namespace with it). Only processes of that namespace: none of the host's."""
    try:
        ns = os.readlink(f"/proc/{holder}/ns/mnt")
    except OSError:
        return
    inside: set[int] = set()
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == holder:
            continue
        pid = int(entry.name)
        with contextlib.suppress(OSError, ValueError, IndexError):
            if os.readlink(entry / "ns/mnt") == ns:
                inside.add(pid)
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    children = {pid for pid, ppid in parents.items() if ppid in inside and pid not in inside}
    for pid in [*children, *inside]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _unmount_under(folder: Path) -> None:
    """Mounts under the folder in the host's namespace (none, unless a daemon escaped its own)."""
    prefix = str(folder) + "/"
    with contextlib.suppress(OSError):
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
            _run(["umount", "-l", point], check=False)
