"""Docker containers: create, start (attached or not), stop, exec, logs, and their PIDs.

A container on a cman network follows the network's policy here: its DNS servers
in a bind-mounted resolv.conf (Docker's embedded DNS would hide them), and, on a
no-ICC network, layer 2 closed before it starts (the network's nftables rules,
:mod:`.l2`) and its bridge port isolated after every start through cman
(:meth:`_isolate_ports`). Which networks a container needs isolated is read from its
labels at every start, never remembered: another process may have replaced it.

A foreground run waits as ``docker run`` does: the wait is registered before the start,
with the condition ``removed`` for an auto-removed container (``--rm``: the daemon
removes it even when cman is killed, and the wait's answer still has the exit code).
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._sys import unixhttp
from ..._sys.files import atomic_write
from ..._sys.retry import idempotent
from ...errors import CmanError, Conflict, ContainerNotFound, EngineError, ExitCode
from ...models import MANAGED_LABEL, State
from ..base import Feature
from . import refs
from .api import ApiError, Stream
from .connection import DockerConnection, boundary, is_transient
from .convert import container_from_inspect, container_from_summary
from .networks import BUILTIN_NETWORKS

if TYPE_CHECKING:
    from ...cgroups.counters import CpuCounters
    from ...models import Container, ContainerSpec, LogChunk, StdIO
    from ...network import Network

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


ISOLATE_LABEL = "cman.isolate"
"""Container label: the no-ICC cman networks whose bridge port cman isolates after each start."""

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


def isolated_networks(raw: dict[str, Any]) -> list[str]:
    """The no-ICC cman networks an inspected container asks to be isolated on (its label)."""
    wanted = ((raw.get("Config") or {}).get("Labels") or {}).get(ISOLATE_LABEL) or ""
    return [name for name in wanted.split(",") if name]


def wait_result(ref: str, data: bytes) -> int:
    """The exit code in the answer of ``POST /containers/ID/wait``; EngineError when the
    daemon says the wait failed (what ``docker run`` reports as its own failure)."""
    try:
        answer = unixhttp.decode_json(data, dict)
    except unixhttp.BadResponse as err:
        raise EngineError(f"docker wait {ref}: {err.message}") from err
    failure = (answer.get("Error") or {}).get("Message") if isinstance(answer.get("Error"), dict) else None
    if failure:
        raise EngineError(f"docker wait {ref}: {failure}")
    code = answer.get("StatusCode")
    if not isinstance(code, int):
        raise EngineError(f"docker wait {ref}: the answer has no exit code")
    return code


class DockerContainers(DockerConnection):
    def create(self, spec: ContainerSpec) -> Container:
        if spec.name is not None:
            self.validate_name(spec.name)
        if spec.nesting:  # Docker-in-Docker needs --privileged, which is not what nesting promises
            self.require(Feature.NESTING)
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
            net = None if spec.network in BUILTIN_NETWORKS or spec.network.startswith("container:") \
                else self._network(spec.network)
            if net is not None:
                from ...network import check_container_ip, container_dns

                if spec.ip:
                    check_container_ip(net, spec.ip)
                dns, dns_search = container_dns(net, spec.dns, spec.dns_search)
                if not net.icc:
                    self.require(Feature.NO_ICC, f"network {net.name} has no ICC")
                    labels[ISOLATE_LABEL] = net.name
                    # Also here: a `docker start` of this container must find layer 2 closed,
                    # even if a `network create` was killed before it installed the rules.
                    self._ensure_layer2(net)
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
            from ...errors import InvalidValue

            raise InvalidValue("--ip", spec.ip, "needs --network")
        if dns:
            host["Dns"] = list(dns)
        if dns_search:
            host["DnsSearch"] = list(dns_search)
        if spec.auto_remove:
            host["AutoRemove"] = True
        if spec.privileged:
            host["Privileged"] = True
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
                             container=spec.name or "?", image=spec.image, action="create", kind=dict)
        with boundary(action="create"):
            ref = refs.engine_id(created.get("Id"))
        return self.inspect(ref)

    def _resolv_conf(self, dns: Sequence[str], dns_search: Sequence[str]) -> str | None:
        """A resolv.conf file for a bind mount, named by its content (shared, never rewritten).

        None when the daemon is remote: the file would have to live on its host.
        """
        if not self.locality().local:
            return None
        import hashlib

        from ...network import render_resolv_conf

        text = render_resolv_conf(dns, dns_search)
        folder = _state_dir() / "resolv"
        path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.conf"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text, mode=0o644, fsync=False)
        return str(path)

    def _inspect_raw(self, ref: str) -> dict[str, Any]:
        raw: dict[str, Any] = self._call("GET", f"/containers/{refs.container(ref)}/json", container=ref, kind=dict)
        return raw

    def start(self, ref: str) -> None:
        self._start(ref, self._inspect_raw(ref))

    def _start(self, ref: str, raw: dict[str, Any]) -> None:
        """Start the inspected container ``raw``: layer 2 closed before, its ports isolated after."""
        wanted = isolated_networks(raw) if self.locality().local else []
        self._close_layer2(wanted)
        try:
            self._call("POST", f"/containers/{refs.container(ref)}/start", container=ref, action="start")
        except EngineError as err:
            cause = err.__cause__
            if isinstance(cause, ApiError) and cause.status in (400, 500):
                raise StartFailed(f"cannot start {ref}: {cause.message}", classify_start_failure(cause.message)) from err
            raise
        if wanted:
            self._isolate_ports(ref, wanted)

    def _close_layer2(self, wanted: Sequence[str]) -> None:
        """Before a start: the nftables rules of each no-ICC network are in place (:mod:`.l2`;
        after a reboot they are gone while Docker's networks stay)."""
        for name in wanted:
            self._ensure_layer2(self._network(name))

    def _ensure_layer2(self, net: Network) -> None:
        from . import l2

        if net.icc or not net.subnet:
            return
        try:
            l2.ensure(net.name, net.subnet)
        except CmanError as err:
            raise EngineError(f"docker: cannot close layer 2 of no-ICC network {net.name} ({err})",
                              hint="cman needs root and nftables for no-ICC networks") from err

    def _isolate_ports(self, ref: str, wanted: Sequence[str]) -> None:
        """No-ICC at layer 2: isolate the container's veth on each no-ICC cman network.

        Docker's enable_icc=false drops IP between peers but not ARP; bridge port
        isolation closes layer 2 too, also for frames the network's nftables rules do
        not match (a container may send from any MAC). Runs after every start/restart
        through cman, because Docker makes a new veth each time. If it cannot be done the
        container is killed: it must not run with less isolation than its network promises.
        """
        pid = (self._inspect_raw(ref).get("State") or {}).get("Pid")
        if not pid:
            return  # already gone again: nothing is attached
        from ...network import isolation

        ports = (isolation.Port(name, net.bridge) for name in wanted
                 if (net := self._network(name)).bridge and not net.icc)
        isolation.enforce("docker", ref, int(pid), ports, stop=lambda: self.kill(ref))

    def start_attached(self, ref: str, io: StdIO) -> int:
        raw = self._inspect_raw(ref)
        config = raw.get("Config") or {}
        tty = bool(config.get("Tty"))
        want_stdin = io.stdin is not None and bool(config.get("OpenStdin"))
        # As `docker run`: the wait is registered before the start, so a command that ends
        # at once is not missed and an auto-removed container still gives its exit code.
        removed = bool((raw.get("HostConfig") or {}).get("AutoRemove"))
        path = f"/containers/{refs.container(ref)}"
        with contextlib.ExitStack() as stack:
            with boundary(container=ref, action="wait"):
                waiting: Stream = stack.enter_context(self.api.stream(
                    "POST", f"{path}/wait", params={"condition": "removed" if removed else "next-exit"}))
            with boundary(container=ref, action="attach"):
                sock = self.api.hijack(f"{path}/attach",
                                       params={"stream": 1, "stdin": int(want_stdin), "stdout": 1, "stderr": 1})
            stack.callback(sock.close)
            self._start(ref, raw)
            from ..._sys.tty import pump_socket  # only for foreground sessions
            from ...models import StdIO

            stream_io = StdIO(io.stdin if want_stdin else None, io.stdout, io.stderr, tty)
            resize = self._resizer(f"{path}/resize") if tty else None

            pump_socket(sock, stream_io, multiplexed=not tty, resize=resize)
            with boundary(container=ref, action="wait"):
                return wait_result(ref, waiting.read())

    def _resizer(self, path: str) -> Callable[[int, int], None]:
        def resize(rows: int, cols: int) -> None:
            with contextlib.suppress(ApiError, OSError):  # a lost resize must not end the session
                self.api.call("POST", path, params={"h": rows, "w": cols}, timeout=5)

        return resize

    def wait(self, ref: str) -> int:
        with boundary(container=ref, action="wait"), self.api.stream(
                "POST", f"/containers/{refs.container(ref)}/wait") as answer:
            return wait_result(ref, answer.read())

    @idempotent(is_transient)
    def stop(self, ref: str, *, timeout: float = 10) -> None:
        grace = max(0, math.ceil(timeout))
        self._call("POST", f"/containers/{refs.container(ref)}/stop", params={"t": grace}, timeout=grace + 60,
                   container=ref, action="stop")

    def restart(self, ref: str, *, timeout: float = 10) -> None:
        grace = max(0, math.ceil(timeout))
        wanted = isolated_networks(self._inspect_raw(ref)) if self.locality().local else []
        self._close_layer2(wanted)
        self._call("POST", f"/containers/{refs.container(ref)}/restart", params={"t": grace}, timeout=grace + 60,
                   container=ref, action="restart")
        if wanted:
            self._isolate_ports(ref, wanted)

    def remove(self, ref: str, *, force: bool = False) -> None:
        """Remove the container; ContainerNotFound when it is gone (also when the daemon
        removed it by itself: ``--rm``). A removal already under way is waited for."""
        try:
            self._call("DELETE", f"/containers/{refs.container(ref)}", params={"force": force, "v": True},
                       container=ref, action="remove")
        except Conflict as err:
            cause = err.__cause__
            if isinstance(cause, ApiError) and "already in progress" in cause.message:
                self._wait_removed(ref)
                return
            if force:
                raise
            raise Conflict(f"container {ref} is running", hint=f"stop it first (cman stop {ref}) or use rm -f") from err

    def _wait_removed(self, ref: str) -> None:
        """Until the daemon has removed ``ref`` (an auto-removal racing ours)."""
        with contextlib.suppress(ContainerNotFound), boundary(container=ref, action="remove"), self.api.stream(
                "POST", f"/containers/{refs.container(ref)}/wait", params={"condition": "removed"}) as answer:
            answer.read()

    def kill(self, ref: str, signal: str = "SIGKILL") -> None:
        self._call("POST", f"/containers/{refs.container(ref)}/kill", params={"signal": signal}, container=ref,
                   action="kill")

    @idempotent(is_transient)
    def containers(self, *, all: bool = False) -> list[Container]:  # noqa: A002
        raw = self._call("GET", "/containers/json", params={"all": all}, action="list containers", kind=list)
        return [container_from_summary(r) for r in raw]

    @idempotent(is_transient)
    def inspect(self, ref: str) -> Container:
        return container_from_inspect(self._inspect_raw(ref))

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
        created = self._call("POST", f"/containers/{refs.container(ref)}/exec", body=config, container=ref,
                             action="exec", kind=dict)
        with boundary(container=ref, action="exec"):
            exec_id = refs.engine_id(created.get("Id"))
        with boundary(container=ref, action="exec"):
            sock = self.api.hijack(f"/exec/{exec_id}/start", body={"Detach": False, "Tty": io.tty})
        try:
            resize = self._resizer(f"/exec/{exec_id}/resize") if io.tty else None
            from ..._sys.tty import pump_socket

            pump_socket(sock, io, multiplexed=not io.tty, resize=resize)
        finally:
            sock.close()
        for _ in range(100):  # the exit code is set a moment after the stream closes
            code = self._call("GET", f"/exec/{exec_id}/json", container=ref, kind=dict).get("ExitCode")
            if code is not None:
                return int(code)
            time.sleep(0.02)
        raise EngineError(f"docker: exec in {ref} finished but reported no exit code")

    def logs(self, ref: str, *, follow: bool = False) -> Iterator[LogChunk]:
        from ...models import LogChunk

        tty = bool((self._inspect_raw(ref).get("Config") or {}).get("Tty"))
        params = {"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": 0}
        with boundary(container=ref, action="logs"), self.api.stream(
            "GET", f"/containers/{refs.container(ref)}/logs", params=params
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

    def cpu_counters(self, ids: Sequence[str]) -> dict[str, CpuCounters | None]:
        """Docker's stats endpoint, once per container (``one-shot``: the daemon does not wait
        for a second reading of its own). A stopped container reports zeros at time zero."""
        from ...cgroups.counters import CpuCounters as Counters

        out: dict[str, CpuCounters | None] = {}
        for cid in ids:
            try:
                raw = self._call("GET", f"/containers/{refs.container(cid)}/stats", params={"stream": "0", "one-shot": "1"},
                                 container=cid, action="read the CPU use of", kind=dict)
            except ContainerNotFound:
                out[cid] = None
                continue
            usage = (raw.get("cpu_stats") or {}).get("cpu_usage") or {}
            total = usage.get("total_usage")
            if not isinstance(total, int) or str(raw.get("read") or "").startswith("0001-"):
                out[cid] = None
                continue
            user, system = usage.get("usage_in_usermode"), usage.get("usage_in_kernelmode")
            out[cid] = Counters(total, user if isinstance(user, int) else None,
                                   system if isinstance(system, int) else None, "docker-api", "", Path())
        return out

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
