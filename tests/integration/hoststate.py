"""What a cman test run has on this host, read from the engines' own tools and the filesystem.

The fault suites (test_faults_kill.py, test_faults_restart.py) take a :class:`Snapshot`
before they inject faults and after, and compare. Everything is read without cman (docker
CLI, ``lxc query``, ``lxc-ls``, ``ip``, ``iptables``, ``nft``, the files themselves), so a
leftover that cman's own listings would hide still shows. Only what is *attributed* to the
run is kept, because other test runs share the host:

- names (containers, networks, bridges, aliases, tags, rule tags) that contain one of the
  run's prefixes (conftest's ``PREFIX`` and ``NET_PREFIX``);
- files cman marks with the PID of the process that wrote them (``.NAME.cman-PID.tmp``,
  the LXC image store's ``.tmp-PID-START-*`` work folders, LXD's temporary image tarballs
  ``cman-lxd-image-PID-START-*``, LXC's ``.cman-new-PID-START-*`` folders) when that PID is
  one of the cman processes the test started;
- veths on one of the run's bridges; Docker images holding one of the run's layers;
  everything in a folder that is wholly the test's own (a private LXC image store).

Each :class:`Item` names what it belongs to (``refs``: a container, network, bridge or
image name), so a test can tell what it still legitimately owns from what was left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LXC_PATH = Path("/var/lib/lxc")
LXC_STORE = Path("/var/lib/cman/lxc-images")
RECORDS_DIR = ".cman-networks"
NFT_TABLE = ("bridge", "cman_docker", "no_icc")
CHAIN = "DOCKER-USER"
TAG = "cman:"

_TEMP = re.compile(r"\.(?P<name>.+)\.cman-(?P<pid>[0-9]+)\.tmp")
_WORK = re.compile(r"(?:^|.*\.)tmp-(?P<pid>[0-9]+)-[0-9]+-[0-9a-f]+")
_TARBALL = re.compile(r"cman-lxd-image-(?P<pid>[0-9]+)-[0-9]+-.*\.tar\.gz")
_NEW_DIR = re.compile(r"\.cman-new-(?P<pid>[0-9]+)-[0-9]+-.*")
_RULE_TAG = re.compile(r'--comment "?cman:(?P<net>[^" ]+)"?')


@dataclass
class Scope:
    """What counts as this run's."""

    prefixes: tuple[str, ...]
    pids: set[int] = field(default_factory=set)
    """cman processes the test started (their temporary files carry the PID)."""
    lxc_paths: tuple[Path, ...] = (LXC_PATH,)
    stores: tuple[Path, ...] = (LXC_STORE,)
    """LXC image stores to look into (the default one, and private ones)."""
    private: tuple[Path, ...] = ()
    """Folders wholly the test's own: every image and work folder in them counts."""
    docker_layers: set[str] = field(default_factory=set)
    """Layer digests (``sha256:...``) of images the test imports into Docker."""
    lxd_fingerprints: set[str] = field(default_factory=set)

    def named(self, *texts: object) -> bool:
        return any(p in str(t) for t in texts for p in self.prefixes)

    def owned_pid(self, pid: str | int) -> bool:
        return int(pid) in self.pids

    def is_private(self, path: Path) -> bool:
        return any(path == root or root in path.parents for root in self.private)


@dataclass(frozen=True)
class Item:
    kind: str
    key: str
    detail: str = ""
    refs: tuple[str, ...] = ()
    """Names it belongs to: a container, network, bridge or image (none: belongs to nothing)."""

    def __str__(self) -> str:
        return f"{self.kind} {self.key}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Diff:
    added: tuple[Item, ...]
    removed: tuple[Item, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    def lines(self) -> list[str]:
        return [f"+ {i}" for i in self.added] + [f"- {i}" for i in self.removed]

    def __str__(self) -> str:
        return "\n".join(self.lines()) or "(no difference)"


@dataclass(frozen=True)
class Snapshot:
    items: dict[tuple[str, str], Item]

    def diff(self, later: Snapshot) -> Diff:
        """What ``later`` has that this one has not (added), and the reverse (removed)."""
        added = tuple(later.items[k] for k in sorted(later.items.keys() - self.items.keys()))
        removed = tuple(self.items[k] for k in sorted(self.items.keys() - later.items.keys()))
        return Diff(added, removed)

    def of_kind(self, kind: str) -> list[Item]:
        return [i for i in self.items.values() if i.kind == kind]

    def __len__(self) -> int:
        return len(self.items)


# -- tools ------------------------------------------------------------------------------------


def _run(argv: list[str], *, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _have(tool: str) -> bool:
    return shutil.which(tool) is not None


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _lxd_query(path: str) -> Any:
    return json.loads(_run(["lxc", "query", path]) or "null")


# -- readers ------------------------------------------------------------------------------------


def docker_items(scope: Scope) -> Iterator[Item]:
    if not _have("docker"):
        return
    for c in _json_lines(_run(["docker", "ps", "-a", "--no-trunc", "--format", "{{json .}}"])):
        name = str(c.get("Names", ""))
        if scope.named(name):
            yield Item("docker container", name, str(c.get("State", "")), (name,))
    nets = [str(n.get("Name", "")) for n in
            _json_lines(_run(["docker", "network", "ls", "--no-trunc", "--format", "{{json .}}"]))]
    nets = [n for n in nets if scope.named(n)]
    for net in json.loads(_run(["docker", "network", "inspect", *nets], check=False) or "[]") if nets else []:
        bridge = str((net.get("Options") or {}).get("com.docker.network.bridge.name") or "")
        subnets = ",".join(str(c.get("Subnet")) for c in (net.get("IPAM") or {}).get("Config") or [])
        yield Item("docker network", str(net["Name"]), f"bridge {bridge} subnet {subnets}", (str(net["Name"]), bridge))
    ids = _run(["docker", "image", "ls", "-a", "-q", "--no-trunc"]).split()
    if not ids:
        return
    for img in json.loads(_run(["docker", "image", "inspect", *sorted(set(ids))], check=False) or "[]"):
        tags = [str(t) for t in img.get("RepoTags") or []]
        layers = set((img.get("RootFS") or {}).get("Layers") or [])
        if scope.named(*tags) or layers & scope.docker_layers:
            refs = tuple(tags) + tuple(t.removesuffix(":latest") for t in tags)
            yield Item("docker image", str(img["Id"]), ",".join(tags) or "untagged", refs)


def lxd_items(scope: Scope) -> Iterator[Item]:
    if not _have("lxc") or _run(["lxc", "query", "/1.0"], check=False) == "":
        return
    for inst in _lxd_query("/1.0/instances?recursion=1") or []:
        name = str(inst["name"])
        if scope.named(name):
            detail = f"{inst.get('status', '').lower()}{' ephemeral' if inst.get('ephemeral') else ''}"
            yield Item("lxd container", name, detail, (name,))
    for net in _lxd_query("/1.0/networks?recursion=1") or []:
        name = str(net["name"])
        if net.get("managed") and scope.named(name):
            yield Item("lxd network", name, str((net.get("config") or {}).get("ipv4.address", "")), (name, name))
    for img in _lxd_query("/1.0/images?recursion=1") or []:
        aliases = [str(a["name"]) for a in img.get("aliases") or []]
        props = img.get("properties") or {}
        fingerprint = str(img["fingerprint"])
        if scope.named(*aliases, props.get("name", ""), props.get("description", "")) \
                or fingerprint in scope.lxd_fingerprints:
            yield Item("lxd image", fingerprint, ",".join(aliases) or f"no alias, name {props.get('name')!r}",
                       (*aliases, fingerprint))


def lxc_items(scope: Scope) -> Iterator[Item]:
    for path in scope.lxc_paths:
        yield from _lxc_path(scope, path)
    for store in scope.stores:
        yield from _lxc_store(scope, store)


def _lxc_path(scope: Scope, path: Path) -> Iterator[Item]:
    try:
        entries = sorted(os.listdir(path))
    except FileNotFoundError:
        return
    states: dict[str, str] = {}
    if _have("lxc-ls"):
        for line in _run(["lxc-ls", "-P", str(path), "-f", "-F", "NAME,STATE"], check=False).splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2:
                states[parts[0]] = parts[1].lower()
    for entry in entries:
        folder = path / entry
        if m := _NEW_DIR.fullmatch(entry):
            if scope.owned_pid(m["pid"]):
                yield Item("lxc container", f"{path}/{entry}", "unfinished create folder")
            continue
        if entry.startswith(".") or not folder.is_dir() or not scope.named(entry):
            continue
        detail = states.get(entry, "") if (folder / "config").exists() else "no config"
        yield Item("lxc container", entry, detail, (entry,))
    records = path / RECORDS_DIR
    try:
        names = sorted(os.listdir(records))
    except FileNotFoundError:
        names = []
    for entry in names:
        if not entry.endswith(".json") or entry.startswith("."):
            continue
        try:
            record = json.loads((records / entry).read_text())
        except (OSError, ValueError):
            continue
        net = str(record.get("name", entry[:-5]))
        bridge = str(record.get("bridge") or "")
        if scope.named(net, bridge):
            yield Item("lxc network", net, f"bridge {bridge} subnet {record.get('subnet')}", (net, bridge))
        for container, ip in sorted((record.get("allocations") or {}).items()):
            if scope.named(net, container):
                yield Item("lxc lease", f"{net}/{container}", str(ip), (container,))


def _lxc_store(scope: Scope, store: Path) -> Iterator[Item]:
    try:
        entries = sorted(os.listdir(store))
    except FileNotFoundError:
        return
    private = scope.is_private(store)
    for entry in entries:
        folder = store / entry
        if entry.startswith(".") or not folder.is_dir():
            continue
        try:
            meta = json.loads((folder / "metadata.json").read_text())
        except (OSError, ValueError):
            meta = {}
        aliases = [str(a) for a in meta.get("aliases") or []]
        if private or scope.named(*aliases):
            refs = tuple(aliases) + tuple(a.removesuffix(":latest") for a in aliases)
            yield Item("lxc image", f"{store}/{entry}", ",".join(aliases) or "no alias", refs)


def link_items(scope: Scope) -> Iterator[Item]:
    if not _have("ip"):
        return
    links = json.loads(_run(["ip", "-d", "-j", "link", "show"]) or "[]")
    ours = {str(link["ifname"]) for link in links
            if scope.named(link.get("ifname", ""), link.get("ifalias", ""))}
    for link in links:
        name = str(link["ifname"])
        master = str(link.get("master") or "")
        if name not in ours and master not in ours:
            continue
        kind = str((link.get("linkinfo") or {}).get("info_kind") or "")
        alias = str(link.get("ifalias") or "")
        refs = (name, *([alias.split(":")[2]] if alias.startswith("cman:lxc:") else [])) if name in ours \
            else (master,)
        detail = " ".join(x for x in (kind, f"master {master}" if master else "", f"alias {alias}" if alias else "") if x)
        yield Item("link", name, detail, refs)


def rule_items(scope: Scope) -> Iterator[Item]:
    if _have("iptables"):
        listing = _run(["iptables", "-w", "10", "-S", CHAIN], check=False)
        for line in listing.splitlines():
            m = _RULE_TAG.search(line)
            if m and scope.named(m["net"], line):
                bridge = line.split(" -i ", 1)[1].split()[0] if " -i " in line else ""
                yield Item("docker-user rule", line, "", (m["net"], bridge))
    if _have("nft"):
        family, table, chain = NFT_TABLE
        listing = _run(["nft", "list", "chain", family, table, chain], check=False)
        for line in listing.splitlines():
            m = re.search(r'comment "cman:(?P<net>[^"]+)"', line)
            if m and scope.named(m["net"]):
                yield Item("nft rule", line.strip(), "", (m["net"],))


def file_items(scope: Scope) -> Iterator[Item]:
    """cman's temporary files and work folders of the run's processes."""
    roots: list[tuple[Path, int]] = [(Path("/var/lib/cman"), 3), (Path("/run/cman"), 2), (Path("/tmp"), 1)]
    if tmpdir := os.environ.get("TMPDIR"):
        roots.append((Path(tmpdir), 1))
    roots += [(p, 2) for p in scope.lxc_paths] + [(s, 2) for s in scope.stores]
    seen: set[Path] = set()
    for root, depth in roots:
        for folder in _folders(root, depth):
            if folder in seen:
                continue
            seen.add(folder)
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            for name in names:
                path = folder / name
                if (m := _TEMP.fullmatch(name)) and (scope.owned_pid(m["pid"]) or scope.named(m["name"])):
                    yield Item("temporary", str(path), "half-written file")
                elif (m := _WORK.fullmatch(name)) and (scope.owned_pid(m["pid"]) or scope.is_private(path)):
                    yield Item("temporary", str(path), "image store work folder")
                elif (m := _TARBALL.fullmatch(name)) and scope.owned_pid(m["pid"]):
                    yield Item("temporary", str(path), "LXD image tarball")


def _folders(root: Path, depth: int) -> Iterator[Path]:
    """``root`` and its folders down to ``depth`` levels; never into a rootfs, the registry's
    data, or a folder named like a work folder (its content is the work folder's)."""
    yield root
    if depth <= 0:
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("rootfs") or entry.name in ("registry", "proc", "sys") \
                or _WORK.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        yield from _folders(Path(entry.path), depth - 1)


READERS: tuple[Callable[[Scope], Iterable[Item]], ...] = (
    docker_items, lxd_items, lxc_items, link_items, rule_items, file_items,
)


def snapshot(scope: Scope, engines: Iterable[str] = ("docker", "lxd", "lxc")) -> Snapshot:
    """Everything of the run's on the host now (the engines not in ``engines`` are not asked)."""
    wanted = set(engines)
    readers = [r for r in READERS if r.__name__.split("_")[0] not in {"docker", "lxd", "lxc"} - wanted]
    items: dict[tuple[str, str], Item] = {}
    for reader in readers:
        for item in reader(scope):
            items[(item.kind, item.key)] = item
    return Snapshot(items)


def owned_by(item: Item, names: set[str]) -> bool:
    return bool(set(item.refs) & names)
