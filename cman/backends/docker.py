"""Docker backend: the Engine API, through the docker SDK or the local socket.

Honours DOCKER_HOST like the docker CLI: tcp:// (with DOCKER_TLS_VERIFY and
DOCKER_CERT_PATH) goes through the docker SDK's APIClient; the local unix
socket, and ssh:// (``ssh HOST docker system dial-stdio``, as the docker CLI
does it), go through a small stdlib client, because importing the SDK
(``requests``) costs more than a whole ``docker run`` (see ``_docker_api``).
Every call is written once, against raw API paths. Engine errors are
translated into cman's error family here, in :func:`_boundary`, and nowhere else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import struct
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .._sys import tty as _tty
from .._sys import unixhttp as _http
from .._sys.retry import idempotent
from ..errors import (
    CmanError,
    Conflict,
    ContainerNotFound,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    ExitCode,
    ImageNotFound,
    InUse,
    InvalidName,
    NameInUse,
    NetworkNotFound,
    SourceUnreachable,
)
from ..models import (
    MANAGED_LABEL,
    Container,
    ContainerSpec,
    EngineStatus,
    Image,
    ImageLayer,
    LogChunk,
    PruneResult,
    PullProgress,
    State,
    StdIO,
)
from ..validate import check_name
from . import _reach
from ._docker_api import ApiError, SdkTransport, SshTransport, Transport, UnixTransport
from .base import Backend, Feature, Locality, loopback_url

if TYPE_CHECKING:
    from ..network import Network, NetworkSpec

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
NAME_RULES = "Docker names are 2-128 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
IMAGE_PATTERN = r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
DEFAULT_CMD = ("/bin/sh",)
"""CMD given to images made by ``image import`` so ``cman run -it IMAGE`` gives a shell."""

_STATES = {
    "created": State.CREATED,
    "running": State.RUNNING,
    "paused": State.PAUSED,
    "restarting": State.RESTARTING,
    "exited": State.STOPPED,
    "removing": State.REMOVING,
    "dead": State.DEAD,
}

# The few daemon messages that have no status code of their own: one table, tested.
START_FAILURES: tuple[tuple[str, ExitCode], ...] = (
    ("executable file not found", ExitCode.COMMAND_NOT_FOUND),
    ("no such file or directory", ExitCode.COMMAND_NOT_FOUND),
    ("permission denied", ExitCode.CANNOT_INVOKE),
)


class StartFailed(CmanError):
    """The container was created but its command could not be started."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message, hint="check the command and the image")
        self.exit_code = code


UNREACHABLE_SOURCE = ("dial tcp", "connection refused", "no such host", "i/o timeout", "proxyconnect", "network is unreachable")
"""Daemon messages (HTTP 500 on pull) that mean the registry cannot be reached."""


def classify_start_failure(message: str) -> ExitCode:
    low = message.lower()
    for needle, code in START_FAILURES:
        if needle in low:
            return code
    return ExitCode.RUN_FAILED


ISOLATE_LABEL = "cman.isolate"
"""Container label: the no-ICC cman networks whose bridge port cman isolates after each start."""
_BUILTIN_NETWORKS = frozenset({"bridge", "host", "none", "default"})
BRIDGE_NAME_OPT = "com.docker.network.bridge.name"
ICC_OPT = "com.docker.network.bridge.enable_icc"


DOCKER_TASK_DIRS = (
    Path("/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby"),  # dockerd's own containerd
    Path("/run/containerd/io.containerd.runtime.v2.task/moby"),  # a system containerd (docker-ce)
)
"""Where containerd's runc shim writes ``ID/init.pid`` for Docker's containers (namespace "moby")."""


def _read_pid_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _state_dir() -> Path:
    """Where cman keeps files the local daemon bind-mounts (resolv.conf)."""
    if os.geteuid() == 0:
        return Path("/var/lib/cman/docker")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "cman" / "docker"


def _fix_for_missing_daemon() -> str:
    if shutil.which("dockerd") is None:
        return "install Docker: apt-get install docker.io, then start it: dockerd > /var/log/dockerd.log 2>&1 &"
    return "start the daemon: dockerd > /var/log/dockerd.log 2>&1 & (or: systemctl start docker)"


def _unavailable(cause: BaseException | None = None) -> EngineUnavailable:
    status = DockerBackend.probe()
    if status.reachable:  # it came back meanwhile; report what we saw
        return EngineUnavailable("docker", f"lost the connection to the daemon ({cause})", "retry")
    return EngineUnavailable("docker", status.problem or "daemon not reachable", status.fix or "")


def _is_transient(err: BaseException) -> bool:
    """Connection refused/reset (daemon restarting) and 502/503/504; never a missing socket."""
    cause = err.__cause__ if isinstance(err, CmanError) else err
    if isinstance(cause, ApiError):
        return cause.status in (502, 503, 504)
    return isinstance(cause, (ConnectionResetError, ConnectionRefusedError))


def _q(name: str) -> str:
    return quote(name, safe="/:@")


@contextlib.contextmanager
def _boundary(*, container: str | None = None, image: str | None = None, action: str = "") -> Iterator[None]:
    """Translate transport errors into cman errors, once."""
    what = f" {action}" if action else ""
    try:
        yield
    except CmanError:
        raise
    except ApiError as err:
        text = err.message
        if err.status == 404:
            if container is not None and "image" not in text.lower():
                raise ContainerNotFound(container, "docker") from err
            raise ImageNotFound(image or container or "?", "docker", text) from err
        if err.status == 409:
            if container is not None and "already in use" in text:
                raise NameInUse(container, "docker") from err
            if image is not None and container is None:
                raise InUse(f"image {image} is in use: {text}", hint="remove its containers first, or use --force") from err
            raise Conflict(f"docker{what}: {text}", hint="stop the container first, or use -f") from err
        raise EngineError(f"docker{what}: {text}") from err
    except TimeoutError as err:
        raise EngineTimeout(f"docker did not answer in time{what}") from err
    except (ConnectionResetError, ConnectionRefusedError) as err:
        raise _unavailable(err) from err
    except OSError as err:
        raise _unavailable(err) from err


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and value > 0:
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str) and value and not value.startswith("0001-"):
        text = re.sub(r"(\.\d{6})\d*", r"\1", value).replace("Z", "+00:00")
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text)
    return None


def _container_from_summary(raw: dict[str, Any]) -> Container:
    """From GET /containers/json (the listing)."""
    labels = raw.get("Labels") or {}
    names = raw.get("Names") or ["/" + raw["Id"][:12]]
    nets = (raw.get("NetworkSettings") or {}).get("Networks") or {}
    return Container(
        backend="docker",
        id=raw["Id"],
        name=names[0].lstrip("/"),
        image=raw.get("Image", ""),
        state=_STATES.get(raw.get("State", ""), State.UNKNOWN),
        status=raw.get("Status", ""),
        managed=labels.get(MANAGED_LABEL) == "true",
        created=_parse_time(raw.get("Created")),
        command=(raw["Command"],) if raw.get("Command") else (),
        labels=labels,
        addresses={k: v.get("IPAddress", "") for k, v in nets.items() if v.get("IPAddress")},
    )


def _container_from_inspect(raw: dict[str, Any]) -> Container:
    config = raw.get("Config") or {}
    state = raw.get("State") or {}
    labels = config.get("Labels") or {}
    nets = (raw.get("NetworkSettings") or {}).get("Networks") or {}
    st = _STATES.get(state.get("Status", ""), State.UNKNOWN)
    return Container(
        backend="docker",
        id=raw["Id"],
        name=raw.get("Name", "").lstrip("/"),
        image=config.get("Image", ""),
        state=st,
        status=state.get("Status", ""),
        managed=labels.get(MANAGED_LABEL) == "true",
        created=_parse_time(raw.get("Created")),
        command=tuple((config.get("Entrypoint") or []) + (config.get("Cmd") or [])),
        labels=labels,
        pid=state.get("Pid") or None,
        exit_code=state.get("ExitCode") if st in (State.STOPPED, State.DEAD) else None,
        addresses={k: v.get("IPAddress", "") for k, v in nets.items() if v.get("IPAddress")},
        extra={
            "tty": bool(config.get("Tty")),
            "env": config.get("Env") or [],
            "started_at": state.get("StartedAt"),
            "finished_at": state.get("FinishedAt"),
            "host_config": {
                k: (raw.get("HostConfig") or {}).get(k)
                for k in ("NanoCpus", "Memory", "Dns", "DnsSearch", "NetworkMode", "AutoRemove")
            },
        },
    )


def _image_from_raw(raw: dict[str, Any]) -> Image:
    return Image(
        backend="docker",
        id=raw["Id"],
        tags=tuple(t for t in (raw.get("RepoTags") or []) if t != "<none>:<none>"),
        size=raw.get("Size"),
        created=_parse_time(raw.get("Created")),
        architecture=raw.get("Architecture"),
        extra={"digests": raw.get("RepoDigests") or []},
    )


class DockerBackend(Backend):
    name = "docker"
    capabilities = frozenset(Feature)

    def __init__(self) -> None:
        self._transport: Transport | None = None
        self._no_isolation: set[str] = set()
        """Containers this process created that need no port isolation after start."""

    # -- connection -----------------------------------------------------------------

    def locality(self) -> Locality:
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        if _reach.docker_socket() is not None or (host.startswith("tcp://") and loopback_url(host)):
            return Locality(True, host)
        return Locality(False, host, f"DOCKER_HOST={host}")

    @property
    def api(self) -> Transport:
        if self._transport is None:
            path = _reach.docker_socket()
            host = os.environ.get("DOCKER_HOST", "")
            if path is not None:
                self._transport = UnixTransport(path)
            else:
                with _boundary(action="connect"):
                    self._transport = SshTransport(host) if host.startswith("ssh://") else SdkTransport()
        return self._transport

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
              timeout: float | None = 60.0, container: str | None = None, image: str | None = None,
              action: str = "") -> Any:
        with _boundary(container=container, image=image, action=action):
            return self.api.call(method, path, params=params, body=body, timeout=timeout)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @classmethod
    def probe(cls) -> EngineStatus:
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        installed = shutil.which("dockerd") is not None or shutil.which("docker") is not None
        path = _reach.docker_socket()
        if path is not None:
            if not os.path.exists(path):
                return EngineStatus("docker", installed, False, False, endpoint=host,
                                    problem=f"the Docker daemon is not running (no socket at {path})",
                                    fix=_fix_for_missing_daemon())
            try:
                info = _http.get_json(path, "/version", timeout=5)
            except PermissionError:
                return EngineStatus("docker", installed, True, False, endpoint=host,
                                    problem=f"permission denied on {path}",
                                    fix="add your user to the docker group: usermod -aG docker $USER, then log in again (or run as root)")
            except ConnectionRefusedError:
                return EngineStatus("docker", installed, False, False, endpoint=host,
                                    problem=f"nothing listens on {path} (stale socket: the daemon is not running)",
                                    fix=_fix_for_missing_daemon())
            except (OSError, _http.HTTPStatusError, ValueError) as err:
                return EngineStatus("docker", installed, True, False, endpoint=host,
                                    problem=f"the daemon at {path} does not answer: {err}",
                                    fix="check /var/log/dockerd.log, then restart dockerd")
            return EngineStatus("docker", installed, True, True, version=str(info.get("Version")), endpoint=host)
        fix = f"check that a Docker daemon listens at {host} (DOCKER_HOST), or unset DOCKER_HOST to use the local socket"
        if host.startswith("ssh://"):
            fix = ("check that ssh to that host works without a prompt (cman runs `ssh -o BatchMode=yes HOST docker "
                   "system dial-stdio`: use a key or ssh-agent) and that `docker` is on the remote PATH, "
                   "or unset DOCKER_HOST to use the local socket")
        if host.startswith("tcp://") and not _reach.reachable("docker"):
            return EngineStatus("docker", installed, False, False, endpoint=host,
                                problem=f"nothing listens at {host}", fix=fix)
        try:
            # ssh: ConnectTimeout bounds ssh's connect and handshake, the timeout the answer.
            transport = SshTransport(host) if host.startswith("ssh://") else SdkTransport()
            version = transport.call("GET", "/version", timeout=10)
            transport.close()
        except (ApiError, OSError) as err:
            return EngineStatus("docker", installed, False, False, endpoint=host,
                                problem=f"cannot talk to the daemon at {host}: {err}", fix=fix)
        return EngineStatus("docker", installed, True, True, version=str(version.get("Version")), endpoint=host)

    @classmethod
    def reachable(cls) -> bool:
        return _reach.reachable("docker")

    @classmethod
    def validate_name(cls, name: str) -> None:
        check_name(name, NAME_RE, 128, NAME_RULES)

    @staticmethod
    def validate_image_name(ref: str) -> None:
        host, sep, rest = ref.partition("/")
        looks_like_host = sep and ("." in host or ":" in host or host == "localhost")
        body = rest if looks_like_host else ref
        if "@" in body:
            body, _, digest = body.partition("@")
            if not re.fullmatch(r"[a-z0-9]+:[a-fA-F0-9]{32,}", digest):
                raise InvalidName(f"invalid image digest in {ref!r}")
        if not re.fullmatch(IMAGE_PATTERN, body) or len(ref) > 255:
            raise InvalidName(
                f"invalid image reference {ref!r}",
                hint="use [REGISTRY/]NAME[:TAG] with a lowercase name, e.g. 127.0.0.1:5000/cman/busybox:latest",
            )

    @staticmethod
    def _split_ref(ref: str) -> tuple[str, str]:
        """'host:5000/a/b:tag' -> ('host:5000/a/b', 'tag'); the tag defaults to latest."""
        if "@" in ref:
            repo, _, digest = ref.partition("@")
            return repo, digest
        slash = ref.rfind("/")
        colon = ref.rfind(":")
        if colon > slash:
            return ref[:colon], ref[colon + 1 :]
        return ref, "latest"

    # -- images -----------------------------------------------------------------------

    def pull(self, ref: str) -> Iterator[PullProgress]:
        self.validate_image_name(ref)
        repo, tag = self._split_ref(ref)
        try:
            yield from self._pull(ref, repo, tag)
        except EngineError as err:
            text = str(err).lower()
            if any(needle in text for needle in UNREACHABLE_SOURCE):
                raise SourceUnreachable(ref, err.message.removeprefix("docker pull: ")) from err
            raise

    def _pull(self, ref: str, repo: str, tag: str) -> Iterator[PullProgress]:
        with _boundary(image=ref, action="pull"), self.api.stream(
            "POST", "/images/create", params={"fromImage": repo, "tag": tag}
        ) as body:
            while line := body.readline():
                if not line.strip():
                    continue
                event = json.loads(line)
                if "error" in event:
                    text = str(event.get("error"))
                    if "not found" in text or "manifest unknown" in text:
                        raise ImageNotFound(ref, "docker", text)
                    raise EngineError(f"docker pull {ref}: {text}")
                detail = event.get("progressDetail") or {}
                yield PullProgress(
                    layer=event.get("id"),
                    status=str(event.get("status", "")),
                    current=detail.get("current"),
                    total=detail.get("total"),
                )

    @idempotent(_is_transient)
    def images(self) -> list[Image]:
        return [_image_from_raw(r) for r in self._call("GET", "/images/json", action="list images")]

    @idempotent(_is_transient)
    def image_inspect(self, ref: str) -> Image:
        return _image_from_raw(self._call("GET", f"/images/{_q(ref)}/json", image=ref))

    @idempotent(_is_transient)
    def image_history(self, ref: str) -> list[ImageLayer]:
        return [
            ImageLayer(
                id=str(layer.get("Id", "")),
                created=_parse_time(layer.get("Created")),
                created_by=str(layer.get("CreatedBy", "")),
                size=layer.get("Size"),
                comment=str(layer.get("Comment", "")),
            )
            for layer in self._call("GET", f"/images/{_q(ref)}/history", image=ref)
        ]

    def image_remove(self, ref: str, *, force: bool = False) -> None:
        image_id = self.image_inspect(ref).id
        if not force:
            users = self._containers_using(image_id)
            if users:
                raise InUse(
                    f"image {ref} is in use by container(s) {', '.join(users)}",
                    hint="remove them first, or use --force",
                )
        self._call("DELETE", f"/images/{_q(ref)}", params={"force": force}, image=ref, action="remove image")

    def _containers_using(self, image_id: str) -> list[str]:
        found = self._call("GET", "/containers/json", params={"all": True, "filters": {"ancestor": [image_id]}})
        return [c["Names"][0].lstrip("/") for c in found]

    def image_prune(self) -> PruneResult:
        result = self._call("POST", "/images/prune", params={"filters": {"dangling": ["true"]}}, action="prune images")
        deleted = tuple(str(d.get("Deleted") or d.get("Untagged")) for d in (result.get("ImagesDeleted") or []))
        return PruneResult(removed=deleted, reclaimed_bytes=result.get("SpaceReclaimed"))

    def image_import(self, tarball: Path, name: str) -> Image:
        self.validate_image_name(name)
        repo, tag = self._split_ref(name)
        cmd = json.dumps(list(DEFAULT_CMD))
        with _boundary(image=name, action="import"), open(tarball, "rb") as data, self.api.stream(
            "POST", "/images/create",
            params={"fromSrc": "-", "repo": repo, "tag": tag, "changes": f"CMD {cmd}"},
            data=data, content_type="application/x-tar",
        ) as body:
            for line in body.read().splitlines():
                if line.strip() and "error" in (event := json.loads(line)):
                    raise EngineError(f"docker import {name}: {event['error']}")
        return self.image_inspect(f"{repo}:{tag}")

    # -- containers ---------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> Container:
        if spec.name is not None:
            self.validate_name(spec.name)
        host: dict[str, Any] = {}
        config: dict[str, Any] = {}
        labels = {**spec.labels, MANAGED_LABEL: "true"}
        if spec.cpus is not None:
            host["NanoCpus"] = int(spec.cpus * 1e9)
        if spec.memory is not None:
            host["Memory"] = spec.memory
        dns, dns_search = spec.dns, spec.dns_search
        if spec.network:
            host["NetworkMode"] = spec.network
            net = None if spec.network in _BUILTIN_NETWORKS or spec.network.startswith("container:") \
                else self._network(spec.network)
            if net is not None:
                from ..network import check_container_ip, container_dns

                if spec.ip:
                    check_container_ip(net, spec.ip)
                dns, dns_search = container_dns(net, spec.dns, spec.dns_search)
                if not net.icc:
                    self.require(Feature.NO_ICC, f"network {net.name} has no ICC")
                    labels[ISOLATE_LABEL] = net.name
                if dns and net.dns:
                    self.require(Feature.NETWORK_DNS, f"network {net.name} has DNS servers")
                if dns and (source := self._resolv_conf(dns, dns_search)) is not None:
                    # Docker's embedded DNS (127.0.0.11) would hide the servers on a
                    # user-defined network; cman's promise is a resolv.conf that shows them.
                    host["Binds"] = [f"{source}:/etc/resolv.conf:ro"]
            if spec.ip:
                config["NetworkingConfig"] = {
                    "EndpointsConfig": {spec.network: {"IPAMConfig": {"IPv4Address": spec.ip}}}
                }
        elif spec.ip:
            from ..errors import InvalidValue

            raise InvalidValue("--ip", spec.ip, "needs --network")
        if dns:
            host["Dns"] = list(dns)
        if dns_search:
            host["DnsSearch"] = list(dns_search)
        if spec.auto_remove:
            host["AutoRemove"] = True
        config.update({
            "Image": spec.image,
            "Env": [f"{k}={v}" for k, v in spec.env.items()],
            "Labels": labels,
            "Tty": spec.tty,
            "OpenStdin": spec.interactive,
            # What `docker run -i` sets: closing our stdin closes the container's.
            "StdinOnce": spec.interactive,
            "AttachStdin": spec.interactive,
            "AttachStdout": True,
            "AttachStderr": True,
            "HostConfig": host,
        })
        if spec.command:
            config["Cmd"] = list(spec.command)
        created = self._call("POST", "/containers/create", params={"name": spec.name}, body=config,
                             container=spec.name or "?", image=spec.image, action="create")
        if ISOLATE_LABEL not in labels:
            self._no_isolation.add(created["Id"])
            if spec.name:
                self._no_isolation.add(spec.name)
        return self.inspect(created["Id"])

    def _resolv_conf(self, dns: Sequence[str], dns_search: Sequence[str]) -> str | None:
        """A resolv.conf file for a bind mount, named by its content (shared, never rewritten).

        None when the daemon is remote: the file would have to live on its host.
        """
        if not self.locality().local:
            return None
        import hashlib

        from ..network import render_resolv_conf

        text = render_resolv_conf(dns, dns_search)
        folder = _state_dir() / "resolv"
        path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.conf"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(text)
            tmp.chmod(0o644)
            os.replace(tmp, path)
        return str(path)

    def start(self, ref: str) -> None:
        try:
            self._call("POST", f"/containers/{_q(ref)}/start", container=ref, action="start")
        except EngineError as err:
            cause = err.__cause__
            if isinstance(cause, ApiError) and cause.status in (400, 500):
                raise StartFailed(f"cannot start {ref}: {cause.message}", classify_start_failure(cause.message)) from err
            raise
        self._isolate_ports(ref)

    def _isolate_ports(self, ref: str) -> None:
        """No-ICC at layer 2: isolate the container's veth on each no-ICC cman network.

        Docker's enable_icc=false drops IP between peers but not ARP; bridge port
        isolation closes layer 2 too. Runs after every start/restart through cman,
        because Docker makes a new veth each time. If it cannot be done the container
        is killed: it must not run with less isolation than its network promises.
        """
        if ref in self._no_isolation or not self.locality().local:
            return
        raw = self._call("GET", f"/containers/{_q(ref)}/json", container=ref)
        wanted = ((raw.get("Config") or {}).get("Labels") or {}).get(ISOLATE_LABEL)
        pid = (raw.get("State") or {}).get("Pid")
        if not wanted or not pid:
            return
        from ..network import isolation

        ports = (isolation.Port(name, net.bridge) for name in wanted.split(",")
                 if (net := self._network(name)).bridge and not net.icc)
        isolation.enforce("docker", ref, int(pid), ports, stop=lambda: self.kill(ref))

    def start_attached(self, ref: str, io: StdIO) -> int:
        info = self._call("GET", f"/containers/{_q(ref)}/json", container=ref)
        tty = bool(info["Config"].get("Tty"))
        want_stdin = io.stdin is not None and bool(info["Config"].get("OpenStdin"))
        with _boundary(container=ref, action="attach"):
            sock = self.api.hijack(
                f"/containers/{_q(ref)}/attach",
                params={"stream": 1, "stdin": int(want_stdin), "stdout": 1, "stderr": 1},
            )
        try:
            self.start(ref)
            stream_io = StdIO(io.stdin if want_stdin else None, io.stdout, io.stderr, tty)
            resize = self._resizer(f"/containers/{_q(ref)}/resize") if tty else None
            _tty.pump_socket(sock, stream_io, multiplexed=not tty, resize=resize)
        finally:
            sock.close()
        return self.wait(ref)

    def _resizer(self, path: str) -> _tty.ResizeFn:
        def resize(rows: int, cols: int) -> None:
            with contextlib.suppress(ApiError, OSError):  # a lost resize must not end the session
                self.api.call("POST", path, params={"h": rows, "w": cols}, timeout=5)

        return resize

    def wait(self, ref: str) -> int:
        result = self._call("POST", f"/containers/{_q(ref)}/wait", timeout=None, container=ref, action="wait")
        return int(result.get("StatusCode", 0))

    @idempotent(_is_transient)
    def stop(self, ref: str, *, timeout: float = 10) -> None:
        grace = max(0, math.ceil(timeout))
        self._call("POST", f"/containers/{_q(ref)}/stop", params={"t": grace}, timeout=grace + 60,
                   container=ref, action="stop")

    def restart(self, ref: str, *, timeout: float = 10) -> None:
        grace = max(0, math.ceil(timeout))
        self._call("POST", f"/containers/{_q(ref)}/restart", params={"t": grace}, timeout=grace + 60,
                   container=ref, action="restart")
        self._isolate_ports(ref)

    def remove(self, ref: str, *, force: bool = False) -> None:
        try:
            self._call("DELETE", f"/containers/{_q(ref)}", params={"force": force, "v": True},
                       container=ref, action="remove")
        except Conflict as err:
            if force:
                raise
            raise Conflict(f"container {ref} is running", hint=f"stop it first (cman stop {ref}) or use rm -f") from err

    def kill(self, ref: str, signal: str = "SIGKILL") -> None:
        self._call("POST", f"/containers/{_q(ref)}/kill", params={"signal": signal}, container=ref, action="kill")

    @idempotent(_is_transient)
    def containers(self, *, all: bool = False) -> list[Container]:  # noqa: A002
        raw = self._call("GET", "/containers/json", params={"all": all}, action="list containers")
        return [_container_from_summary(r) for r in raw]

    @idempotent(_is_transient)
    def inspect(self, ref: str) -> Container:
        return _container_from_inspect(self._call("GET", f"/containers/{_q(ref)}/json", container=ref))

    def exec(
        self,
        ref: str,
        command: Sequence[str],
        io: StdIO,
        *,
        env: dict[str, str] | None = None,
    ) -> int:
        config = {
            "AttachStdin": io.stdin is not None,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": io.tty,
            "Cmd": list(command),
            "Env": [f"{k}={v}" for k, v in (env or {}).items()],
        }
        exec_id = self._call("POST", f"/containers/{_q(ref)}/exec", body=config, container=ref, action="exec")["Id"]
        with _boundary(container=ref, action="exec"):
            sock = self.api.hijack(f"/exec/{exec_id}/start", body={"Detach": False, "Tty": io.tty})
        try:
            resize = self._resizer(f"/exec/{exec_id}/resize") if io.tty else None
            _tty.pump_socket(sock, io, multiplexed=not io.tty, resize=resize)
        finally:
            sock.close()
        for _ in range(100):  # the exit code is set a moment after the stream closes
            code = self._call("GET", f"/exec/{exec_id}/json", container=ref).get("ExitCode")
            if code is not None:
                return int(code)
            time.sleep(0.02)
        raise EngineError(f"docker: exec in {ref} finished but reported no exit code")

    def logs(self, ref: str, *, follow: bool = False) -> Iterator[LogChunk]:
        tty = bool(self._call("GET", f"/containers/{_q(ref)}/json", container=ref)["Config"].get("Tty"))
        params = {"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": 0}
        with _boundary(container=ref, action="logs"), self.api.stream(
            "GET", f"/containers/{_q(ref)}/logs", params=params
        ) as body:
            if tty:
                while chunk := body.read(65536) if not follow else body.readline():
                    yield LogChunk("stdout", chunk)
                return
            while len(header := body.read(8)) == 8:
                kind, size = header[0], struct.unpack(">I", header[4:8])[0]
                yield LogChunk("stderr" if kind == 2 else "stdout", body.read(size))

    def init_pid(self, ref: str) -> int | None:
        return self.inspect(ref).pid

    def init_pids(self, containers: Sequence[Container]) -> dict[str, int | None]:
        """Docker's listing has no PIDs: read containerd's ``init.pid`` per running container.

        One small file read instead of an ``inspect`` call per container (~0.03 ms against
        ~0.65 ms). The shim writes the file when the task starts and removes it with the
        task, so a restarted container shows its new PID. Containers whose file is not
        found (another runtime, another exec-root) fall back to ``inspect``.
        """
        out: dict[str, int | None] = {}
        missing: list[Container] = []
        for c in containers:
            if c.pid is not None or c.state not in (State.RUNNING, State.PAUSED, State.RESTARTING):
                out[c.id] = c.pid
                continue
            pid = next((p for root in DOCKER_TASK_DIRS if (p := _read_pid_file(root / c.id / "init.pid"))), None)
            if pid is None:
                missing.append(c)
            out[c.id] = pid
        if missing:
            out.update(super().init_pids(missing))
        return out

    # -- networks ------------------------------------------------------------------------

    @classmethod
    def validate_network_spec(cls, spec: NetworkSpec) -> None:
        if spec.name in _BUILTIN_NETWORKS:
            raise InvalidName(f"invalid network name {spec.name!r}", hint="it is one of Docker's predefined networks")

    def _net_call(self, method: str, path: str, *, name: str, action: str, params: dict[str, Any] | None = None,
                  body: Any = None) -> Any:
        """An Engine API call about a network: 404 is NetworkNotFound, 409 a Conflict about it."""
        with _boundary(action=action):
            try:
                return self.api.call(method, path, params=params, body=body)
            except ApiError as err:
                if err.status == 404:
                    raise NetworkNotFound(name, "docker") from err
                if err.status in (403, 409):
                    raise Conflict(f"docker {action} {name}: {err.message}") from err
                raise

    def network_create(self, spec: NetworkSpec) -> Network:
        if not spec.resolved:
            raise ValueError(f"network_create needs a resolved spec, got {spec}")
        body = {
            "Name": spec.name,
            "CheckDuplicate": True,
            "Driver": "bridge",
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": spec.subnet, "Gateway": spec.gateway}]},
            "Options": {BRIDGE_NAME_OPT: spec.bridge, ICC_OPT: "true" if spec.icc else "false"},
            "Labels": {MANAGED_LABEL: "true", **spec.labels()},
        }
        created = self._net_call("POST", "/networks/create", name=spec.name, action="network create", body=body)
        # Docker writes its own FORWARD rules for its bridges (ICC accept or drop);
        # a DOCKER-USER rule from cman would override them, so none is added here.
        return self.network_inspect(str(created.get("Id") or spec.name))

    @idempotent(_is_transient)
    def networks(self) -> list[Network]:
        raw = self._call("GET", "/networks", params={"filters": {"driver": ["bridge"]}}, action="list networks")
        # By network name: a created, never started container has no NetworkID yet.
        attached: dict[str, list[str]] = {}
        for c in self._call("GET", "/containers/json", params={"all": True}, action="list containers"):
            name = (c.get("Names") or ["/" + c["Id"][:12]])[0].lstrip("/")
            for net_name in (c.get("NetworkSettings") or {}).get("Networks") or {}:
                attached.setdefault(net_name, []).append(name)
        return sorted((_network_from_raw(r, attached.get(r["Name"], [])) for r in raw), key=lambda n: n.name)

    @idempotent(_is_transient)
    def network_inspect(self, name: str) -> Network:
        return self._network(name, detail=True)

    def _network(self, name: str, *, detail: bool = False) -> Network:
        """The network; with ``detail`` also its containers (running or not) and cman's host rules."""
        raw = self._net_call("GET", f"/networks/{_q(name)}", name=name, action="network inspect")
        if raw.get("Driver") != "bridge":
            raise NetworkNotFound(name, "docker")
        if not detail:
            return _network_from_raw(raw, sorted(c.get("Name", "") for c in (raw.get("Containers") or {}).values()))
        # By name: the filter matches a created, never started container only by name.
        users = self._call("GET", "/containers/json", params={"all": True, "filters": {"network": [raw["Name"]]}},
                           action="list containers")
        net = _network_from_raw(raw, sorted(c["Names"][0].lstrip("/") for c in users))
        if net.managed and net.bridge and self.locality().local:
            from ..network import isolation, netfilter

            extra = {
                **net.extra,
                "host_rules": [str(r) for r in netfilter.list_rules(net.name)],
                "isolated_ports": sorted(p for p, iso in isolation.bridge_ports(net.bridge).items() if iso),
            }
            net = dataclasses.replace(net, extra=extra)
        return net

    def network_remove(self, name: str, *, force: bool = False) -> None:
        net = self.network_inspect(name)
        if net.containers and not force:
            raise InUse(
                f"network {name} is in use by container(s) {', '.join(net.containers)}",
                hint=f"remove them first, or `cman network rm -f docker:{name}` to disconnect them",
            )
        for container in net.containers:
            with contextlib.suppress(NetworkNotFound):
                self._net_call("POST", f"/networks/{net.id}/disconnect", name=name, action="network disconnect",
                               body={"Container": container, "Force": True})
        self._net_call("DELETE", f"/networks/{net.id}", name=name, action="network rm")
        if net.managed and self.locality().local:
            from ..network import netfilter

            netfilter.remove_rules(net.name, net.bridge)


def _network_from_raw(raw: dict[str, Any], containers: Sequence[str]) -> Network:
    from ..network import Network, spec_from_labels

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
        created=_parse_time(raw.get("Created")),
        extra={"driver": raw.get("Driver"), "scope": raw.get("Scope"), "options": options, "labels": labels,
               "internal": bool(raw.get("Internal"))},
    )
