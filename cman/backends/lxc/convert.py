"""cman's own LXC records (cman.json, the image store's metadata, network records) as cman models.

Pure functions: the callers read the files and the state (``lxc-info``/``lxc-ls``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..._sys.times import ago, parse_time
from ...models import Container, State
from ...oci import imageconfig
from .tools import Paths

if TYPE_CHECKING:
    from ...models import Image
    from ...network import Network

STATES = {
    "STOPPED": State.STOPPED,
    "STARTING": State.RUNNING,
    "RUNNING": State.RUNNING,
    "STOPPING": State.RUNNING,
    "ABORTING": State.DEAD,
    "FREEZING": State.PAUSED,
    "FROZEN": State.PAUSED,
    "THAWED": State.RUNNING,
}
"""``lxc-info`` states -> cman's."""


def to_container(paths: Paths, st: str | None, pid: int | None, meta: Mapping[str, Any] | None,
                 run: Mapping[str, Any], job_end: Callable[[], tuple[int, datetime | None]]) -> Container:
    """A container from its LXC state and PID, its cman.json (None: not cman's) and its
    cman.state.json (``run``); ``job_end`` reads the job's exit code and when it was
    recorded, asked only for a stopped container whose command ran."""
    managed = bool(meta and meta.get("managed"))
    meta = meta or {}
    state = STATES.get(st or "", State.UNKNOWN)
    started, finished = parse_time(run.get("started")), parse_time(run.get("finished"))
    exit_code: int | None = None
    if state == State.STOPPED and meta.get("command") and started:
        exit_code, ended = job_end()
        if ended is not None and (finished is None or ended > finished):
            finished = ended
    if state == State.STOPPED and managed and not started:
        state, status = State.CREATED, "Created"
    elif state == State.RUNNING:
        status = f"Up {ago(started)}" if started else "Up"
    elif state == State.STOPPED:
        code = f" ({exit_code})" if exit_code is not None else ""
        status = f"Exited{code} {ago(finished)} ago" if finished else f"Exited{code}"
    else:
        status = (st or "unknown").lower()
    return Container(
        backend="lxc",
        id=paths.name,
        name=paths.name,
        image=str(meta.get("image", "")),
        state=state,
        status=status,
        managed=managed,
        created=parse_time(meta.get("created")),
        command=tuple(meta.get("command") or ()),
        labels=dict(meta.get("labels") or {}),
        pid=pid if state in (State.RUNNING, State.PAUSED) else None,
        exit_code=exit_code,
        addresses={str(meta["network"]): str(meta["ip"])} if meta.get("network") and meta.get("ip") else {},
        extra={
            "lxc_state": st,
            "lxcpath": paths.lxcpath,
            "config": str(paths.config),
            "rootfs": str(paths.rootfs),
            "rootfs_lower": meta.get("rootfs_lower"),
            "image_id": meta.get("image_id"),
            "env": meta.get("env") or {},
            "tty": bool(meta.get("tty")),
            "cpus": meta.get("cpus"),
            "memory": meta.get("memory"),
            "auto_remove": bool(meta.get("auto_remove")),
            "privileged": bool(meta.get("privileged")),
            "nesting": bool(meta.get("nesting")),
            "idmap": meta.get("idmap"),
            "started_at": run.get("started"),
            "finished_at": run.get("finished"),
            "console_log": str(paths.console),
            "network": meta.get("network"),
            "dns": meta.get("dns") or [],
            "dns_search": meta.get("dns_search") or [],
        },
    )


def to_image(meta: Mapping[str, Any]) -> Image:
    """An image from its metadata.json in cman's LXC image store."""
    from ...models import Image

    source = meta.get("source") or {}
    return Image(
        backend="lxc",
        id=str(meta["id"]),
        tags=tuple(meta.get("aliases", [])),
        size=meta.get("size"),
        created=parse_time(meta.get("created")),
        architecture=meta.get("architecture"),
        extra={
            "source": source,
            "unpacked_size": meta.get("unpacked_size"),
            "default_command": meta.get("default_command", []),
            "file": meta.get("file"),
            "lxc_config": meta.get("lxc_config", []),
            **imageconfig.image_extra(meta.get("image_config")),
        },
    )



def created_by(meta: Mapping[str, Any]) -> str:
    """What made the image, as ``image history`` shows it."""
    source = meta.get("source") or {}
    kind = source.get("kind")
    if kind == "import":
        return f"cman image import {source.get('path', '?')}"
    if kind == "oci":
        return f"cman pull {source.get('ref', '?')} (from {source.get('from', '?')})"
    if kind == "template":
        args = " ".join(source.get("args", []))
        return f"lxc-create -t {source.get('template', '?')}" + (f" -- {args}" if args else "")
    return str(kind or "?")


def to_network(record: Mapping[str, Any], containers: Sequence[str] = (),
               extra: Mapping[str, Any] | None = None) -> Network:
    """A network from its record (:mod:`.net`); ``containers`` are those on it now."""
    from ...network import Network

    return Network(
        backend="lxc",
        name=str(record["name"]),
        id=str(record.get("id") or ""),
        bridge=record.get("bridge"),
        subnet=record.get("subnet"),
        gateway=record.get("gateway"),
        dns=tuple(record.get("dns") or ()),
        dns_search=tuple(record.get("dns_search") or ()),
        icc=bool(record.get("icc", True)),
        containers=tuple(containers),
        managed=bool(record.get("managed")),
        created=parse_time(record.get("created")),
        extra=dict(extra or {}),
    )
