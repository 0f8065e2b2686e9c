"""Engine API records -> cman models (Container, Image, ImageLayer, Network); pure, no I/O.

Docker's timestamps are epoch seconds in listings and RFC 3339 with nanoseconds
elsewhere; :func:`cman._sys.times.parse_time` reads both (Go's zero time is None).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..._sys.times import parse_time
from ...models import MANAGED_LABEL, Container, State

if TYPE_CHECKING:
    from ...models import Image, ImageLayer
    from ...network import Network

STATES = {
    "created": State.CREATED,
    "running": State.RUNNING,
    "paused": State.PAUSED,
    "restarting": State.RESTARTING,
    "exited": State.STOPPED,
    "removing": State.REMOVING,
    "dead": State.DEAD,
}
"""The Engine API's container states -> cman's."""

BRIDGE_NAME_OPT = "com.docker.network.bridge.name"
ICC_OPT = "com.docker.network.bridge.enable_icc"


def container_name(raw: dict[str, Any]) -> str:
    """The name in a listing's record (``Names`` has a leading '/'; the short ID if it has none)."""
    return str((raw.get("Names") or ["/" + raw["Id"][:12]])[0]).lstrip("/")


def _addresses(raw: dict[str, Any]) -> dict[str, str]:
    nets = (raw.get("NetworkSettings") or {}).get("Networks") or {}
    return {k: v.get("IPAddress", "") for k, v in nets.items() if v.get("IPAddress")}


def container_from_summary(raw: dict[str, Any]) -> Container:
    """From GET /containers/json (the listing)."""
    labels = raw.get("Labels") or {}
    return Container(
        backend="docker",
        id=raw["Id"],
        name=container_name(raw),
        image=raw.get("Image", ""),
        state=STATES.get(raw.get("State", ""), State.UNKNOWN),
        status=raw.get("Status", ""),
        managed=labels.get(MANAGED_LABEL) == "true",
        created=parse_time(raw.get("Created")),
        command=(raw["Command"],) if raw.get("Command") else (),
        labels=labels,
        addresses=_addresses(raw),
    )


def container_from_inspect(raw: dict[str, Any]) -> Container:
    """From GET /containers/ID/json."""
    config = raw.get("Config") or {}
    state = raw.get("State") or {}
    labels = config.get("Labels") or {}
    st = STATES.get(state.get("Status", ""), State.UNKNOWN)
    return Container(
        backend="docker",
        id=raw["Id"],
        name=raw.get("Name", "").lstrip("/"),
        image=config.get("Image", ""),
        state=st,
        status=state.get("Status", ""),
        managed=labels.get(MANAGED_LABEL) == "true",
        created=parse_time(raw.get("Created")),
        command=tuple((config.get("Entrypoint") or []) + (config.get("Cmd") or [])),
        labels=labels,
        pid=state.get("Pid") or None,
        exit_code=state.get("ExitCode") if st in (State.STOPPED, State.DEAD) else None,
        addresses=_addresses(raw),
        extra={
            "tty": bool(config.get("Tty")),
            "env": config.get("Env") or [],
            "started_at": state.get("StartedAt"),
            "finished_at": state.get("FinishedAt"),
            "host_config": {
                k: (raw.get("HostConfig") or {}).get(k)
                for k in ("NanoCpus", "Memory", "Dns", "DnsSearch", "NetworkMode", "AutoRemove", "Privileged")
            },
        },
    )


def image_from_raw(raw: dict[str, Any]) -> Image:
    """From GET /images/json or /images/REF/json."""
    from ...models import Image

    return Image(
        backend="docker",
        id=raw["Id"],
        tags=tuple(t for t in (raw.get("RepoTags") or []) if t != "<none>:<none>"),
        size=raw.get("Size"),
        created=parse_time(raw.get("Created")),
        architecture=raw.get("Architecture"),
        extra={"digests": raw.get("RepoDigests") or [], **_config_extra(raw.get("Config"))},
    )


def _config_extra(config: Any) -> dict[str, Any]:
    """``extra["config"]`` as every engine shows it (only /images/REF/json carries Config)."""
    if not isinstance(config, dict):
        return {}
    from ...errors import CmanError
    from ...oci import imageconfig

    try:
        return {"config": imageconfig.to_extra(imageconfig.from_blob({"config": config}))}
    except CmanError:
        return {}


def layer_from_raw(raw: dict[str, Any]) -> ImageLayer:
    """One entry of GET /images/REF/history."""
    from ...models import ImageLayer

    return ImageLayer(
        id=str(raw.get("Id", "")),
        created=parse_time(raw.get("Created")),
        created_by=str(raw.get("CreatedBy", "")),
        size=raw.get("Size"),
        comment=str(raw.get("Comment", "")),
    )


def network_from_raw(raw: dict[str, Any], containers: Sequence[str]) -> Network:
    """From GET /networks or /networks/NAME; ``containers`` are the names attached to it.

    A cman network's DNS servers and search domains live in its labels (Docker keeps
    no such field); a bridge without a name option is Docker's ``br-`` + short ID.
    """
    from ...network import Network, spec_from_labels

    labels = raw.get("Labels") or {}
    options = raw.get("Options") or {}
    v4: dict[str, Any] = next(
        (c for c in ((raw.get("IPAM") or {}).get("Config") or []) if ":" not in str(c.get("Subnet", ""))), {}
    )
    managed = labels.get(MANAGED_LABEL) == "true"
    recorded = spec_from_labels(labels)
    bridge = options.get(BRIDGE_NAME_OPT) or f"br-{raw['Id'][:12]}"
    return Network(
        backend="docker",
        name=raw.get("Name", ""),
        id=raw["Id"],
        bridge=bridge,
        subnet=v4.get("Subnet") or None,
        gateway=v4.get("Gateway") or None,
        dns=recorded["dns"] if managed else (),
        dns_search=recorded["dns_search"] if managed else (),
        icc=str(options.get(ICC_OPT, "true")).lower() != "false",
        containers=tuple(containers),
        managed=managed,
        created=parse_time(raw.get("Created")),
        extra={"driver": raw.get("Driver"), "scope": raw.get("Scope"), "options": options, "labels": labels,
               "internal": bool(raw.get("Internal"))},
    )
