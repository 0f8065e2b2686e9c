"""Docker backend over the ``docker`` SDK.

Honours DOCKER_HOST (unix://, tcp:// with DOCKER_TLS_VERIFY/DOCKER_CERT_PATH,
ssh:// through the ssh binary) like the docker CLI. Engine errors are
translated into cman's error family here, in :func:`_boundary`, and nowhere else.
The listing hot path (``cman ps``) talks to a local unix socket with the stdlib
(see ``_http``) so the CLI does not pay for importing ``requests``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import socket
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _tty
from ..errors import (
    CmanError,
    Conflict,
    ContainerNotFound,
    EngineError,
    EngineUnavailable,
    ExitCode,
    ImageNotFound,
    InUse,
    InvalidName,
    NameInUse,
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
from . import _http, _reach
from ._retry import idempotent
from .base import Backend, Feature

if TYPE_CHECKING:
    import docker

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
NAME_RULES = "Docker names are 2-128 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
IMAGE_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?")
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


def classify_start_failure(message: str) -> ExitCode:
    low = message.lower()
    for needle, code in START_FAILURES:
        if needle in low:
            return code
    return ExitCode.RUN_FAILED


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
    import docker.errors
    import requests.exceptions

    if isinstance(err, docker.errors.APIError):
        return err.status_code in (502, 503, 504)
    if isinstance(err, requests.exceptions.ConnectionError):
        # A missing socket means "not running", not "restarting": fail fast.
        return not _caused_by(err, FileNotFoundError, PermissionError)
    return isinstance(err, (ConnectionResetError, ConnectionRefusedError))


def _caused_by(err: BaseException, *types: type[BaseException]) -> bool:
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, types):
            return True
        stack.extend([cur.__cause__, cur.__context__, *[a for a in cur.args if isinstance(a, BaseException)]])
    return False


@contextlib.contextmanager
def _boundary(*, container: str | None = None, image: str | None = None, action: str = "") -> Iterator[None]:
    """Translate docker SDK / requests exceptions into cman errors, once."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except CmanError:
        raise
    except docker.errors.ImageNotFound as err:
        raise ImageNotFound(image or container or "?", "docker", _explanation(err)) from err
    except docker.errors.NotFound as err:
        if container is not None:
            raise ContainerNotFound(container, "docker") from err
        raise ImageNotFound(image or "?", "docker", _explanation(err)) from err
    except docker.errors.APIError as err:
        text = _explanation(err)
        if err.status_code == 409:
            if container is not None and "already in use" in text:
                raise NameInUse(container, "docker") from err
            if image is not None:
                raise InUse(f"image {image} is in use: {text}", hint="remove its containers first, or use --force") from err
            raise Conflict(f"docker: {text}", hint="stop the container first, or use -f") from err
        raise EngineError(f"docker{(' ' + action) if action else ''}: {text}") from err
    except (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError) as err:
        raise _unavailable(err) from err
    except docker.errors.DockerException as err:
        if "Error while fetching server API version" in str(err):
            raise _unavailable(err) from err
        raise EngineError(f"docker: {err}") from err
    except requests.exceptions.ReadTimeout as err:
        from ..errors import EngineTimeout

        raise EngineTimeout(f"docker did not answer in time{(' to ' + action) if action else ''}") from err


def _explanation(err: Any) -> str:
    text = getattr(err, "explanation", None) or str(err)
    return str(text).strip()


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


def _raw_socket(obj: Any) -> socket.socket:
    """docker-py hands back a SocketIO or a socket; the pump needs the socket."""
    sock = getattr(obj, "_sock", obj)
    if not isinstance(sock, socket.socket):  # ssh/npipe transports wrap differently
        sock = getattr(sock, "_sock", sock)
    assert isinstance(sock, socket.socket)
    return sock


class DockerBackend(Backend):
    name = "docker"
    capabilities = frozenset(
        {
            Feature.PULL,
            Feature.PULL_PROGRESS,
            Feature.IMAGE_IMPORT,
            Feature.IMAGE_HISTORY,
            Feature.TTY,
            Feature.EXEC,
            Feature.LOGS,
            Feature.LOGS_FOLLOW,
            Feature.CPU_LIMIT,
            Feature.MEMORY_LIMIT,
            Feature.REMOTE,
        }
    )

    def __init__(self) -> None:
        self._api: docker.APIClient | None = None
        self._socket = _reach.docker_socket()

    # -- connection -----------------------------------------------------------------

    @property
    def api(self) -> docker.APIClient:
        if self._api is None:
            import docker as sdk

            kwargs = sdk.utils.kwargs_from_env()
            host = kwargs.get("base_url") or ""
            with _boundary(action="connect"):
                self._api = sdk.APIClient(
                    version=os.environ.get("DOCKER_API_VERSION", "auto"),
                    use_ssh_client=str(host).startswith("ssh://"),
                    timeout=120,
                    **kwargs,
                )
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    @classmethod
    def probe(cls) -> EngineStatus:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
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
        try:
            backend = cls()
            version = backend.api.version()
        except CmanError as err:
            return EngineStatus("docker", installed, False, False, endpoint=host, problem=err.message,
                                fix=f"check that a daemon listens at {host} (DOCKER_HOST), or unset DOCKER_HOST")
        return EngineStatus("docker", installed, True, True, version=str(version.get("Version")), endpoint=host)

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
        if not IMAGE_RE.fullmatch(body) or len(ref) > 255:
            raise InvalidName(
                f"invalid image reference {ref!r}",
                hint="use [REGISTRY/]NAME[:TAG] with a lowercase name, e.g. 127.0.0.1:5000/cman/busybox:latest",
            )

    # -- images -----------------------------------------------------------------------

    def pull(self, ref: str) -> Iterator[PullProgress]:
        import docker.utils

        self.validate_image_name(ref)
        repo, tag = docker.utils.parse_repository_tag(ref)
        with _boundary(image=ref, action="pull"):
            for event in self.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
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
        with _boundary(action="list images"):
            return [_image_from_raw(r) for r in self.api.images()]

    @idempotent(_is_transient)
    def image_inspect(self, ref: str) -> Image:
        with _boundary(image=ref):
            return _image_from_raw(self.api.inspect_image(ref))

    @idempotent(_is_transient)
    def image_history(self, ref: str) -> list[ImageLayer]:
        with _boundary(image=ref):
            return [
                ImageLayer(
                    id=str(layer.get("Id", "")),
                    created=_parse_time(layer.get("Created")),
                    created_by=str(layer.get("CreatedBy", "")),
                    size=layer.get("Size"),
                    comment=str(layer.get("Comment", "")),
                )
                for layer in self.api.history(ref)
            ]

    def image_remove(self, ref: str, *, force: bool = False) -> None:
        with _boundary(image=ref, action="remove image"):
            self.api.inspect_image(ref)
            if not force:
                users = self._containers_using(ref)
                if users:
                    raise InUse(
                        f"image {ref} is in use by container(s) {', '.join(users)}",
                        hint="remove them first, or use --force",
                    )
            self.api.remove_image(ref, force=force)

    def _containers_using(self, ref: str) -> list[str]:
        image_id = self.api.inspect_image(ref)["Id"]
        return [c["Names"][0].lstrip("/") for c in self.api.containers(all=True, filters={"ancestor": image_id})]

    def image_prune(self) -> PruneResult:
        with _boundary(action="prune images"):
            result = self.api.prune_images(filters={"dangling": True})
        deleted = tuple(
            str(d.get("Deleted") or d.get("Untagged")) for d in (result.get("ImagesDeleted") or [])
        )
        return PruneResult(removed=deleted, reclaimed_bytes=result.get("SpaceReclaimed"))

    def image_import(self, tarball: Path, name: str) -> Image:
        import docker.utils

        self.validate_image_name(name)
        repo, tag = docker.utils.parse_repository_tag(name)
        cmd = " ".join(f'"{c}"' for c in DEFAULT_CMD)
        with _boundary(image=name, action="import"):
            self.api.import_image_from_file(
                str(tarball), repository=repo, tag=tag or "latest", changes=[f"CMD [{cmd}]"]
            )
            return _image_from_raw(self.api.inspect_image(name if tag else f"{repo}:latest"))

    # -- containers ---------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> Container:
        if spec.name is not None:
            self.validate_name(spec.name)
        host_config: dict[str, Any] = {}
        if spec.cpus is not None:
            host_config["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.memory is not None:
            host_config["mem_limit"] = spec.memory
        if spec.dns:
            host_config["dns"] = list(spec.dns)
        if spec.dns_search:
            host_config["dns_search"] = list(spec.dns_search)
        if spec.network:
            host_config["network_mode"] = spec.network
        if spec.auto_remove:
            host_config["auto_remove"] = True
        labels = {**spec.labels, MANAGED_LABEL: "true"}
        with _boundary(container=spec.name or "?", image=spec.image, action="create"):
            created = self.api.create_container(
                spec.image,
                command=list(spec.command) or None,
                name=spec.name,
                environment=dict(spec.env) or None,
                labels=labels,
                tty=spec.tty,
                stdin_open=spec.interactive,
                detach=not spec.interactive,
                host_config=self.api.create_host_config(**host_config),
            )
            # stdin_once is what `docker run -i` sets: closing our stdin closes the container's.
            return self.inspect(created["Id"])

    def start(self, ref: str) -> None:
        with _boundary(container=ref, action="start"):
            try:
                self.api.start(ref)
            except Exception as err:
                import docker.errors

                if isinstance(err, docker.errors.APIError) and err.status_code in (400, 500):
                    text = _explanation(err)
                    raise StartFailed(f"cannot start {ref}: {text}", classify_start_failure(text)) from err
                raise

    def start_attached(self, ref: str, io: StdIO) -> int:
        with _boundary(container=ref, action="attach"):
            info = self.api.inspect_container(ref)
            tty = bool(info["Config"].get("Tty"))
            want_stdin = io.stdin is not None and bool(info["Config"].get("OpenStdin"))
            raw = self.api.attach_socket(
                ref, params={"stdin": int(want_stdin), "stdout": 1, "stderr": 1, "stream": 1, "logs": 0}
            )
        sock = _raw_socket(raw)
        try:
            self.start(ref)
            stream_io = io if want_stdin else StdIO(None, io.stdout, io.stderr, io.tty)
            with _tty.raw_terminal(io.stdin if tty else None), _tty.forward_resize(
                io, (lambda r, c: self.api.resize(ref, height=r, width=c)) if tty else None
            ):
                _tty.pump_socket(sock, stream_io, multiplexed=not tty)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with contextlib.suppress(Exception):
                raw.close()
        return self.wait(ref)

    def wait(self, ref: str) -> int:
        with _boundary(container=ref, action="wait"):
            result = self.api.wait(ref, timeout=None)
        return int(result.get("StatusCode", 0))

    @idempotent(_is_transient)
    def stop(self, ref: str, *, timeout: float = 10) -> None:
        with _boundary(container=ref, action="stop"):
            self.api.stop(ref, timeout=max(0, math.ceil(timeout)))

    def restart(self, ref: str, *, timeout: float = 10) -> None:
        with _boundary(container=ref, action="restart"):
            self.api.restart(ref, timeout=max(0, math.ceil(timeout)))

    def remove(self, ref: str, *, force: bool = False) -> None:
        with _boundary(container=ref, action="remove"):
            try:
                self.api.remove_container(ref, force=force, v=True)
            except Exception as err:
                import docker.errors

                if isinstance(err, docker.errors.APIError) and err.status_code == 409 and not force:
                    raise Conflict(
                        f"container {ref} is running", hint=f"stop it first (cman stop {ref}) or use rm -f"
                    ) from err
                raise

    def kill(self, ref: str, signal: str = "SIGKILL") -> None:
        with _boundary(container=ref, action="kill"):
            self.api.kill(ref, signal=signal)

    @idempotent(_is_transient)
    def containers(self, *, all: bool = False) -> list[Container]:  # noqa: A002
        params = {"all": "1"} if all else {}
        if self._socket is not None:
            try:
                raw = _http.get_json(self._socket, "/containers/json", params)
            except (FileNotFoundError, PermissionError, ConnectionRefusedError) as err:
                raise _unavailable(err) from err
            except _http.HTTPStatusError as err:
                raise EngineError(f"docker: list containers: {err}") from err
        else:
            with _boundary(action="list containers"):
                raw = self.api.containers(all=all)
        return [_container_from_summary(r) for r in raw]

    @idempotent(_is_transient)
    def inspect(self, ref: str) -> Container:
        with _boundary(container=ref):
            return _container_from_inspect(self.api.inspect_container(ref))

    def exec(
        self,
        ref: str,
        command: Sequence[str],
        io: StdIO,
        *,
        env: dict[str, str] | None = None,
    ) -> int:
        with _boundary(container=ref, action="exec"):
            created = self.api.exec_create(
                ref, list(command), stdin=io.stdin is not None, tty=io.tty, environment=env or None
            )
            exec_id = created["Id"]
            raw = self.api.exec_start(exec_id, socket=True, tty=io.tty)
        sock = _raw_socket(raw)
        try:
            with _tty.raw_terminal(io.stdin if io.tty else None), _tty.forward_resize(
                io, (lambda r, c: self.api.exec_resize(exec_id, height=r, width=c)) if io.tty else None
            ):
                _tty.pump_socket(sock, io, multiplexed=not io.tty)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
        with _boundary(container=ref, action="exec"):
            for _ in range(50):  # the exit code is set a moment after the stream closes
                code = self.api.exec_inspect(exec_id).get("ExitCode")
                if code is not None:
                    return int(code)
                import time

                time.sleep(0.02)
        raise EngineError(f"docker: exec in {ref} finished but reported no exit code")

    def logs(self, ref: str, *, follow: bool = False) -> Iterator[LogChunk]:
        import struct

        with _boundary(container=ref, action="logs"):
            tty = bool(self.api.inspect_container(ref)["Config"].get("Tty"))
            # docker-py's public logs() merges stdout and stderr; read the frames ourselves.
            res = self.api._get(
                self.api._url("/containers/{0}/logs", ref),
                params={"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": 0},
                stream=True,
            )
            self.api._raise_for_status(res)
        try:
            if tty:
                for chunk in res.iter_content(chunk_size=None):
                    yield LogChunk("stdout", chunk)
                return
            while True:
                header = res.raw.read(8)
                if len(header) < 8:
                    return
                kind, size = header[0], struct.unpack(">I", header[4:8])[0]
                data = res.raw.read(size)
                yield LogChunk("stderr" if kind == 2 else "stdout", data)
        finally:
            res.close()

    def init_pid(self, ref: str) -> int | None:
        return self.inspect(ref).pid
