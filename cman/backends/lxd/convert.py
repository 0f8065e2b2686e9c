"""LXD's records -> cman's models, and cman's settings -> LXD's config: pure functions.

What cman knows of a container beyond LXD's own fields is kept in the instance's
config, under ``user.cman.*`` keys (:data:`CFG_COMMAND` is the job, as JSON), so a
container made by cman reads back the same from any client; the environment is LXD's
own ``environment.*``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..._sys.times import parse_time
from ...models import Container, State
from ...oci import imageconfig
from . import net

if TYPE_CHECKING:
    from ...models import ClusterMember, Image, PullProgress

CFG_MANAGED = "user.cman.managed"
CFG_COMMAND = "user.cman.command"
CFG_IMAGE = "user.cman.image"
CFG_TTY = "user.cman.tty"
CFG_INTERACTIVE = "user.cman.interactive"
CFG_LABEL = "user.cman.label."
CFG_ENV = "environment."

_STATES = {
    "running": State.RUNNING,
    "frozen": State.PAUSED,
    "stopped": State.STOPPED,
    "error": State.DEAD,
    "starting": State.RESTARTING,
    "stopping": State.RUNNING,
}


def cpu_allowance(cpus: float) -> str:
    """``--cpus`` as a CFS quota, Docker's meaning: 0.5 -> "50ms/100ms", 2 -> "200ms/100ms"."""
    return f"{max(1, round(cpus * 100))}ms/100ms"


def _command_of(config: Mapping[str, Any]) -> tuple[str, ...]:
    raw = config.get(CFG_COMMAND)
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _state_of(raw: Mapping[str, Any]) -> State:
    status = str(raw.get("status", "")).lower()
    state = _STATES.get(status, State.UNKNOWN)
    if state == State.STOPPED and "volatile.last_state.power" not in (raw.get("config") or {}):
        return State.CREATED  # never started: LXD sets last_state.power on the first start
    return state


def _addresses(raw: Mapping[str, Any]) -> dict[str, str]:
    """Network name -> IPv4 address: what each NIC has now; for a container that does not
    run, the address cman allocated to it on its cman network (it gets it at start)."""
    state = raw.get("state") or {}
    network = state.get("network") or {}
    config = raw.get("config") or {}
    out: dict[str, str] = {}
    for dev_name, dev in (raw.get("expanded_devices") or {}).items():
        if dev.get("type") != "nic":
            continue
        key = str(dev.get("network") or dev.get("parent") or dev_name)
        iface = dev.get("name") or dev_name
        for addr in (network.get(iface) or {}).get("addresses") or []:
            if addr.get("family") == "inet" and addr.get("scope") == "global":
                out[key] = str(addr.get("address"))
                break
        if not network and key not in out and config.get(net.CFG_NETWORK) == key and config.get(net.CFG_IP):
            out[key] = str(config[net.CFG_IP])
    return out


def _location(raw: Mapping[str, Any]) -> str | None:
    """The member an instance is on; LXD says "none" when the daemon is no cluster member."""
    location = str(raw.get("location") or "")
    return None if location in ("", "none") else location


def _member_from_raw(raw: Mapping[str, Any]) -> ClusterMember:
    """An item of GET /1.0/cluster/members?recursion=1."""
    from ...models import ClusterMember

    return ClusterMember(
        name=str(raw.get("server_name") or ""),
        url=str(raw.get("url") or ""),
        status=str(raw.get("status") or "unknown").lower(),
        message=str(raw.get("message") or ""),
        roles=tuple(str(r) for r in raw.get("roles") or ()),
        architecture=raw.get("architecture") or None,
        failure_domain=raw.get("failure_domain") or None,
    )


def _container_from_raw(raw: Mapping[str, Any], exit_code: int | None = None) -> Container:
    """From GET /1.0/instances/NAME?recursion=1 or an item of /1.0/instances?recursion=2."""
    config = raw.get("config") or {}
    expanded = raw.get("expanded_config") or config
    state = _state_of(raw)
    pid = (raw.get("state") or {}).get("pid") or None
    labels = {k[len(CFG_LABEL) :]: str(v) for k, v in config.items() if k.startswith(CFG_LABEL)}
    base_image = str(config.get("volatile.base_image") or "")
    status = "Created" if state == State.CREATED else str(raw.get("status", ""))
    if state == State.STOPPED and exit_code is not None:
        status = f"Exited ({exit_code})"
    return Container(
        backend="lxd",
        id=str(raw["name"]),
        name=str(raw["name"]),
        image=str(config.get(CFG_IMAGE) or config.get("image.description") or base_image[:12]),
        state=state,
        status=status,
        managed=config.get(CFG_MANAGED) == "true",
        created=parse_time(raw.get("created_at")),
        command=_command_of(config),
        labels=labels,
        pid=int(pid) if pid and state in (State.RUNNING, State.PAUSED) else None,
        exit_code=exit_code if state == State.STOPPED else None,
        addresses=_addresses(raw),
        location=_location(raw),
        extra={
            "type": raw.get("type"),
            "ephemeral": bool(raw.get("ephemeral")),
            "profiles": list(raw.get("profiles") or []),
            "architecture": raw.get("architecture"),
            "base_image": config.get("volatile.base_image"),
            "uuid": config.get("volatile.uuid"),
            "tty": config.get(CFG_TTY) == "true",
            "interactive": config.get(CFG_INTERACTIVE) == "true",
            "env": {k[len(CFG_ENV) :]: v for k, v in expanded.items() if k.startswith(CFG_ENV)},
            "limits": {k: v for k, v in expanded.items() if k.startswith("limits.")},
            "security": {k: v for k, v in expanded.items() if k.startswith("security.")},
            "status_code": raw.get("status_code"),
            "last_used_at": raw.get("last_used_at"),
        },
    )


OCI_CONFIG_PROPERTY = "cman.oci.config"
"""The image property holding an OCI image's config (JSON), set by a registry pull."""
OCI_MANIFEST_PROPERTY = "cman.oci.manifest"


def _image_from_raw(raw: Mapping[str, Any]) -> Image:
    from ...models import Image

    props = raw.get("properties") or {}
    return Image(
        backend="lxd",
        id=str(raw["fingerprint"]),
        tags=tuple(str(a["name"]) for a in raw.get("aliases") or []),
        size=raw.get("size"),
        created=parse_time(raw.get("created_at")) or parse_time(raw.get("uploaded_at")),
        architecture=raw.get("architecture"),
        extra={
            "properties": dict(props),
            "public": bool(raw.get("public")),
            "type": raw.get("type"),
            "cached": bool(raw.get("cached")),
            "auto_update": bool(raw.get("auto_update")),
            "uploaded_at": raw.get("uploaded_at"),
            "update_source": raw.get("update_source"),
            **imageconfig.image_extra(props.get(OCI_CONFIG_PROPERTY)),
        },
    )


def _progress_event(text: str) -> PullProgress:
    """``"rootfs: 23% (1.20MB/s)"`` -> layer "rootfs", status "Downloading 23% (1.20MB/s)"."""
    from ...models import PullProgress

    layer, sep, rest = text.partition(":")
    if not sep:
        return PullProgress(None, text)
    return PullProgress(layer.strip(), f"Downloading {rest.strip()}")
