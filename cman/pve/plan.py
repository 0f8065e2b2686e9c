"""What ``cman provision docker-host --backend pve`` asks of PVE, computed without a request.

One :class:`DockerHostSpec` (the command line) becomes the create request's parameters
(:func:`create_params`), and from those, never separately, the ``/etc/pve/lxc/ID.conf``
lines and the equivalent ``pct create`` argv; and the in-container steps run on the node
with ``pct exec`` (:func:`node_steps`). Everything is validated against PVE's published
schema (:mod:`.schema`) before any request, so a bad value is exit 2 naming the field.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from ..errors import InvalidValue
from . import schema
from .profile import docker_host

CREATE = "POST /nodes/{node}/lxc"
CONFIG = "PUT /nodes/{node}/lxc/{vmid}/config"
NEXTID = "NEXTID"
"""Stands for the vmid PVE allocates (``GET /cluster/nextid``) in a dry run without --vmid."""
CHECK_IMAGE = "busybox:latest"
CHECK_WORDS = "cman-docker-host-ok"
_STORAGE = re.compile(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(\d+(?:\.\d+)?)", re.IGNORECASE | re.ASCII)
_NOT_CONFIG = frozenset({"node", "vmid", "delete", "digest", "revert"})


@dataclass(frozen=True)
class DockerHostSpec:
    """The command line's request, checked on construction (InvalidValue naming the option)."""

    name: str
    node: str
    ostemplate: str
    vmid: int | None = None
    bridge: str = "vmbr0"
    storage: str = "local-lvm:8"
    memory: int | None = None
    cores: int | None = None
    ip: str = "dhcp"
    gw: str | None = None
    nameservers: tuple[str, ...] = ()
    fuse_overlayfs: bool = False
    privileged: bool = False
    registry_mirrors: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        from ..validate import check_config_value

        check_config_value("--ostemplate", self.ostemplate)
        if any(len(label) > 63 for label in self.name.split(".")):  # RFC 1035; PVE checks only 255 in all
            raise InvalidValue("hostname", self.name, "a DNS label has at most 63 characters")
        if not (self.ostemplate.startswith("/") or schema.check_named_format("pve-volume-id", self.ostemplate)):
            raise InvalidValue("--ostemplate", self.ostemplate, "use a volume ID such as "
                               "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst")
        match = _STORAGE.fullmatch(self.storage)
        if not match or float(match.group(2)) <= 0:
            raise InvalidValue("--storage", self.storage, "use STORAGE:SIZE_IN_GiB such as local-lvm:8")
        if self.ip != "dhcp" and "/" not in self.ip:
            raise InvalidValue("--ip", self.ip, "use dhcp or ADDRESS/PREFIX such as 192.168.1.50/24")
        if self.gw is not None and self.ip == "dhcp":
            raise InvalidValue("--gw", self.gw, "a gateway goes with a static --ip ADDRESS/PREFIX, not dhcp")
        if self.registry_mirrors:
            from ..dockerd.settings import DaemonSettings

            DaemonSettings(registry_mirrors=self.registry_mirrors)  # dockerd's own rules, exit 2


def property_string(name: str, items: dict[str, str]) -> str:
    """``k=v,...`` for parameter ``name``, each value checked against its sub-key's schema first,
    so no value can smuggle in another sub-key (``--bridge vmbr0,firewall=1``)."""
    fmt = schema.properties(CREATE)[schema.schema_key(name)]["format"]
    text = ",".join(f"{k}={v}" for k, v in items.items())
    for key, value in items.items():
        why = "a value holds no comma" if "," in value else schema.check_value(fmt[key], value)
        if why:
            raise InvalidValue(name, text, f"{key}: {why}")
    return text


def features(spec: DockerHostSpec) -> tuple[tuple[str, str], ...]:
    return docker_host().feature_items(fuse=spec.fuse_overlayfs)


def features_text(items: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in items)


def create_params(spec: DockerHostSpec, vmid: int | None, feature_items: tuple[tuple[str, str], ...] | None = None
                  ) -> dict[str, str]:
    """The create request's body, wire strings in a stable order. ``feature_items`` overrides
    the profile's (an API token may set only some: see :mod:`.provision`)."""
    items = features(spec) if feature_items is None else feature_items
    net = {"name": "eth0", "bridge": spec.bridge, "ip": spec.ip}
    if spec.gw:
        net["gw"] = spec.gw
    params: dict[str, object] = {
        "vmid": vmid,
        "ostemplate": spec.ostemplate,
        "hostname": spec.name,
        "unprivileged": True if not spec.privileged and docker_host().unprivileged else None,
        "features": property_string("features", dict(items)) if items else None,
        "net0": property_string("net0", net),
        "rootfs": spec.storage,
        "memory": spec.memory,
        "cores": spec.cores,
        "nameserver": " ".join(spec.nameservers) if spec.nameservers else None,
    }
    return {k: schema.wire(v) for k, v in params.items() if v is not None}


def check(spec: DockerHostSpec, params: dict[str, str]) -> None:
    """Every parameter against the create endpoint's schema (vmid may still be unknown)."""
    wire = {"node": spec.node, **params}
    errors = schema.check_request(CREATE, wire, skip_missing=frozenset({"vmid"}))
    if errors:
        name, why = next(iter(errors.items()))
        raise InvalidValue(name, wire.get(name, ""), why)


def conf_text(params: dict[str, str]) -> str:
    """``/etc/pve/lxc/ID.conf`` as PVE writes it: ``key: value`` lines, keys sorted, only
    config keys (what ``PUT .../config`` takes; ``vmid``, ``ostemplate`` are not)."""
    config_keys = set(schema.properties(CONFIG)) - _NOT_CONFIG
    keys = sorted(k for k in params if k in config_keys or schema.schema_key(k) in config_keys)
    return "".join(f"{k}: {params[k]}\n" for k in keys)


def pct_create_argv(params: dict[str, str]) -> list[str]:
    """``pct create VMID OSTEMPLATE --key value ...``: pct takes the API's keys as options."""
    argv = ["pct", "create", params.get("vmid", NEXTID), params["ostemplate"]]
    for key, value in params.items():
        if key not in ("vmid", "ostemplate"):
            argv += [f"--{key}", value]
    return argv


def display(argv: list[str]) -> str:
    """An argv shell-quoted for a human to read or paste; cman itself never runs this text."""
    return shlex.join(argv)


@dataclass(frozen=True)
class Step:
    """One command on the PVE node (as root), run over SSH or printed for the user."""

    name: str
    argv: tuple[str, ...]
    expect: str | None = None
    """A word the command's stdout must contain for the step to count as done."""


def daemon_json(spec: DockerHostSpec) -> str | None:
    """The inner Docker's daemon.json, by cman's dockerd rules; None when nothing is set."""
    import json

    from ..dockerd.settings import DaemonSettings, merge

    base: dict[str, object] = {}
    if spec.fuse_overlayfs:
        base["storage-driver"] = docker_host().storage_driver_fuse
    if not spec.registry_mirrors and not base:
        return None
    merged = merge(base, DaemonSettings(registry_mirrors=spec.registry_mirrors or None))
    return json.dumps(merged, sort_keys=True, separators=(",", ":"))  # one line: it is shown in a command


def features_step(vmid: str, items: tuple[tuple[str, str], ...]) -> Step:
    """The ``pct set`` a root shell on the node runs for features an API token may not set."""
    return Step("features", ("pct", "set", vmid, "--features", features_text(items)))


def node_steps(spec: DockerHostSpec, vmid: str) -> list[Step]:
    """Docker inside the started container, each step a ``pct exec`` on the node."""
    def inside(*argv: str) -> tuple[str, ...]:
        return ("pct", "exec", vmid, "--", *argv)

    packages = ["docker.io"] + (["fuse-overlayfs"] if spec.fuse_overlayfs else [])
    steps = [
        Step("apt-get update", inside("apt-get", "update")),
        Step("install " + " ".join(packages),
             inside("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends",
                    *packages)),
    ]
    config = daemon_json(spec)
    if config is not None:
        # A constant script; the file's content is its positional argument, never part of the script.
        script = 'mkdir -p /etc/docker && printf "%s" "$1" > /etc/docker/daemon.json'
        steps.append(Step("daemon.json", inside("sh", "-c", script, "sh", config)))
    steps += [
        Step("restart dockerd", inside("systemctl", "restart", "docker")),
        Step("storage driver", inside("docker", "info", "--format", "{{.Driver}}")),
        Step("check", inside("docker", "run", "--rm", CHECK_IMAGE, "echo", CHECK_WORDS), expect=CHECK_WORDS),
    ]
    return steps
