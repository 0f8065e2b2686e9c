"""LXD containers: create, start, stop, remove, list, logs, wait, and the primitives of the job runner.

What ``run IMAGE CMD...`` means on LXD (``system_containers = True``). An LXD container
boots its image's init; CMD is the container's *job*, executed inside it by
:mod:`cman.jobs` with the primitives of :class:`cman.jobs.JobHost` that this class
supplies. The container lives as long as its job, as a Docker container lives as long
as its command:

- ``run IMAGE CMD`` (foreground, :meth:`LxdContainers.start_attached`): boot, run CMD
  through LXD's exec websockets with the caller's streams (a pty with ``-t``), return
  its exit code; the job's exit code and output are then recorded in the container and
  the container is stopped with force - whatever else still runs in it is killed, as
  Docker's PID-1 exit kills the rest of the container. If cman is interrupted, the
  signal is forwarded to CMD and the container is stopped; ``--rm`` then removes it.
  ``--rm`` makes the instance ephemeral, and the job's wrapper halts the container when
  CMD ends, so LXD deletes it even when cman was SIGKILLed; every call here takes an
  instance that vanished by itself as gone (``remove`` as done, ``inspect`` as not found,
  ``wait`` with the code it read while the job ran), and ``prune_leftovers`` removes one that a killed ``run``
  never got to start, or booted without its job.
- ``run -d IMAGE CMD`` / ``start`` (:meth:`LxdContainers.start`): boot, then start CMD
  detached - an exec without websockets, so it has no terminal and its stdin is
  /dev/null - under the job runner's fixed ``/bin/sh`` wrapper, which powers the
  container off when CMD ends, so ``wait`` returns the code, ``ps`` shows the container
  stopped, and ``--rm -d`` (an ephemeral container) is deleted. ``restart`` boots again
  and re-runs CMD; logs accumulate.
- ``run IMAGE`` without CMD: with ``-i`` (and ``-t``) the job is ``/bin/sh``; without
  ``-i`` the container is booted and left running as a plain system container (like
  ``lxc launch``) and ``run`` returns 0. ``start`` of a container without CMD just boots it.
- ``logs``: the job's output files, read through LXD's file API (so also from a stopped
  container). A container without a job shows its console log (init's output, which
  LXD serves once the container is stopped).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ... import jobs
from ..._sys import unixhttp as _http
from ..._sys.retry import idempotent
from ...errors import (
    CmanError,
    CommandNotRunnable,
    Conflict,
    ContainerNotFound,
    EngineUnavailable,
    ImageNotFound,
    InvalidValue,
    NameInUse,
)
from ...models import NO_NETWORK, Container, ContainerSpec, LogChunk, State, StdIO
from . import endpoint
from . import nesting as _nesting
from . import net as _net
from .cluster import LxdCluster, check_target
from .connection import OperationFailed, _boundary, _is_transient, _translate, _unavailable, rollback_failed
from .convert import (
    CFG_COMMAND,
    CFG_ENV,
    CFG_IMAGE,
    CFG_INTERACTIVE,
    CFG_LABEL,
    CFG_MANAGED,
    CFG_TTY,
    _command_of,
    _container_from_raw,
    _state_of,
    cpu_allowance,
)
from .images import LxdImages
from .networks import LxdNetworks
from .sampling import LxdSampling

DEFAULT_SHELL = ("/bin/sh",)
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*")
POLL = 0.25
LOG_POLL = 0.3


class LxdContainers(LxdImages, LxdNetworks, LxdCluster, LxdSampling):
    """Containers, made from an image of :class:`LxdImages`, on a network of :class:`LxdNetworks`."""

    @classmethod
    def validate_spec(cls, spec: ContainerSpec) -> None:
        """LXD writes each ``environment.K`` into the container's LXC config as a
        ``lxc.environment = K=V`` line: a newline, CR or NUL in a value would end that
        line and start another config line, so those are refused (naming only the key:
        the value may be a secret). Keys, and label keys, must match their rules whole."""
        for key, value in spec.env.items():
            if not ENV_KEY_RE.fullmatch(key):
                raise InvalidValue("-e/--env", key, "an LXD environment key is letters, digits, '_', '.' and '-', "
                                                    "starting with a letter or '_'")
            if any(c in value for c in "\n\r\0"):
                raise InvalidValue("-e/--env", key, "its value contains a newline, carriage return or NUL byte, "
                                                    "which LXD would write into a config line")
        for key, value in spec.labels.items():
            if not LABEL_KEY_RE.fullmatch(key):
                raise InvalidValue("--label", key, "a label key is letters, digits, '_', '.', '-' and '/', "
                                                   "starting with a letter or digit")
            if any(c in value for c in "\n\r\0"):
                raise InvalidValue("--label", key, "its value contains a newline, carriage return or NUL byte")
        if spec.target is not None:
            check_target(spec.target)
        _nesting.check(spec)

    def create(self, spec: ContainerSpec) -> Container:
        import secrets

        from pylxd import exceptions as lxd_exc

        from ...network import container_dns, render_resolv_conf

        name = spec.name or f"cman-{secrets.token_hex(4)}"
        self.validate_name(name)
        self.validate_spec(spec)
        wanted = _nesting.config(spec, self.client.host_info if spec.nesting else None)
        config: dict[str, str] = {
            **wanted,
            CFG_MANAGED: "true",
            CFG_COMMAND: json.dumps(list(spec.command)),
            CFG_IMAGE: spec.image,
            CFG_TTY: "true" if spec.tty else "false",
            CFG_INTERACTIVE: "true" if spec.interactive else "false",
            # Set either way, so a profile cannot make a container privileged that nobody asked for.
            "security.privileged": "true" if spec.privileged else "false",
        }
        for key, value in spec.env.items():
            config[CFG_ENV + key] = value
        for key, value in spec.labels.items():
            config[CFG_LABEL + key] = value
        if spec.cpus is not None:
            config["limits.cpu.allowance"] = cpu_allowance(spec.cpus)
        if spec.memory is not None:
            config["limits.memory"] = str(spec.memory)
        devices: dict[str, dict[str, str]] = {}
        net = self._network_for(spec)
        if spec.network == NO_NETWORK:
            devices[_net.NIC] = {"type": "none"}  # loopback only: masks the profile's NIC
        servers, search = container_dns(net, spec.dns, spec.dns_search)
        placement = self._placement(spec.target)
        with _boundary(container=name, image=spec.image, action="create"):
            fingerprint = str(self._image_raw(spec.image)["fingerprint"])
            try:
                self.client.api.instances[name].get()
                raise NameInUse(name, "lxd")
            except lxd_exc.NotFound:
                pass
            body: dict[str, Any] = {
                "name": name,
                "type": "container",
                "source": {"type": "image", "fingerprint": fingerprint},
                "config": config,
                "devices": devices,
                "ephemeral": spec.auto_remove,
            }
            if net is None:
                self._sync_or_wait(self.client.api.instances.post(json=body, **placement))
            else:
                net = self._create_on_network(body, net, spec.ip, placement)
        try:
            with _boundary(container=name, action="create"):
                raw = self._raw(name)
                if net is not None:
                    self._pin_address(name, raw, net)
                if servers or search:
                    self._put_file(name, "/etc/resolv.conf", render_resolv_conf(servers, search).encode())
                return _container_from_raw(self._raw(name) if net is not None else raw)
        except BaseException as err:
            self._roll_back(name, err)
            raise

    def _roll_back(self, name: str, err: BaseException) -> None:
        """Delete the instance a failed ``create`` made. If that fails too, the error says so
        in the same line (the original message first), and how to finish the job."""
        try:
            with _boundary(container=name, action="remove"):
                self._delete(name)
        except ContainerNotFound:
            return
        except CmanError as failure:
            rollback_failed(err, f"and the half-made container {name} could not be removed ({failure.message}): "
                                 f"cman rm -f lxd:{name}")

    def _boot(self, ref: str) -> State | None:
        """Start the container unless it runs; its state before, when this call booted it."""
        raw = self._raw(ref)
        before = _state_of(raw)
        if before == State.RUNNING:
            return None
        if before == State.PAUSED:
            self._set_state(ref, "unfreeze")
            return None
        self._before_boot(raw)
        self._set_state(ref, "start")
        return before

    def start(self, ref: str) -> None:
        """Boot the container, set up its network, and launch its job (see :mod:`cman.jobs`)."""
        with _boundary(container=ref, action="start"):
            booted = self._boot(ref) is not None
            raw = self._raw(ref) if booted else None
            if raw is not None:
                self._network_up(ref, raw)
        command = _command_of(raw.get("config") or {}) if raw is not None else ()
        if command:
            jobs.launch(self, ref, command)

    def start_attached(self, ref: str, io: StdIO) -> int:
        """Boot, then run the job in the foreground (see :func:`cman.jobs.run_foreground`)."""
        with _boundary(container=ref, action="start"):
            before = self._boot(ref)
            raw = self._raw(ref)
            if before is not None:
                self._network_up(ref, raw)
            command = _command_of(raw.get("config") or {})
        if not command:
            if io.stdin is None:
                return 0  # a plain system container: booted, left running
            command = DEFAULT_SHELL
        self._check_job(ref, command[0], first_start=before == State.CREATED)
        return jobs.run_foreground(self, ref, command, io)

    def _check_job(self, ref: str, program: str, *, first_start: bool) -> None:
        """The job's command must exist in the container, or the start failed (126/127, as
        Docker's): the container is stopped, and one that had never run before reads
        "created" again (so ``run`` removes it, as it removes a Docker container whose
        start failed). A command that exists and then exits 127 is not this case."""
        with _boundary(container=ref, action="start"):
            verdict = self._runnable(ref, program)
        if verdict in (None, 0):
            return  # runnable, or not known: the job runner reports what happens
        self.kill(ref)
        if first_start:
            with contextlib.suppress(CmanError), _boundary(container=ref, action="start"):
                patch = {"config": {"volatile.last_state.power": ""}}
                self._sync_or_wait(self.client.api.instances[ref].patch(json=patch))
        raise CommandNotRunnable("lxd", ref, program, verdict)

    # -- what the job runner needs (cman.jobs.JobHost; kill is LxdConnection's) ----------------

    def job_state(self, ref: str) -> State | None:
        from pylxd import exceptions as lxd_exc

        with _boundary(container=ref):
            try:
                return _state_of(self._raw(ref))
            except lxd_exc.NotFound:
                return None

    def read_file(self, ref: str, path: str) -> bytes | None:
        with _boundary(container=ref, action=f"read {path}"):
            return self._file(ref, path)

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        from pylxd import exceptions as lxd_exc

        with _boundary(container=ref, action=f"write {path}"):
            try:
                self._put_file(ref, path, data)
            except lxd_exc.LXDAPIException:  # a folder on the way is missing: make them, once
                parts = path.strip("/").split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    self._mkdir(ref, "/" + "/".join(parts[:i]))
                self._put_file(ref, path, data)

    def exec_attached(self, ref: str, command: Sequence[str], io: StdIO) -> int:
        return self._exec(ref, command, io, env=None)

    def exec_detached(self, ref: str, argv: Sequence[str]) -> None:
        body = {
            "command": list(argv),
            "environment": {},
            "wait-for-websocket": False,
            "interactive": False,
            "record-output": False,
        }
        with _boundary(container=ref, action="start the job"):
            self.client.api.instances[ref].exec.post(json=body)

    def halt_signal(self, ref: str) -> int:
        return jobs.DEFAULT_HALT

    # -- stop, restart, remove ----------------------------------------------------------------

    @idempotent(_is_transient)
    def stop(self, ref: str, *, timeout: float = 10) -> None:
        """LXD's clean shutdown (SIGPWR to init), up to ``timeout`` seconds, then kill."""
        with _boundary(container=ref, action="stop"):
            if _state_of(self._raw(ref)) not in (State.RUNNING, State.PAUSED):
                return
            if timeout > 0:
                try:
                    self._set_state(ref, "stop", timeout=max(1, math.ceil(timeout)))
                    return
                except OperationFailed:
                    pass
                except Exception as err:
                    from pylxd import exceptions as lxd_exc

                    if isinstance(err, lxd_exc.NotFound):  # an ephemeral container is gone once stopped
                        return
                    if not isinstance(err, lxd_exc.LXDAPIException):
                        raise
            try:
                self._set_state(ref, "stop", force=True)
            except OperationFailed as err:
                if "already stopped" not in err.message.lower():
                    raise

    def restart(self, ref: str, *, timeout: float = 10) -> None:
        """Stop (clean, then kill after ``timeout``) and start again; the job runs again.

        LXD's own restart action is used, so an ephemeral (``--rm -d``) container survives it.
        """
        with _boundary(container=ref, action="restart"):
            current = self._raw(ref)
            if _state_of(current) not in (State.RUNNING, State.PAUSED):
                self._boot(ref)
            else:
                self._before_boot(current)
                try:
                    self._set_state(ref, "restart", timeout=max(1, math.ceil(timeout)) if timeout > 0 else -1,
                                    force=timeout <= 0)
                except OperationFailed:
                    self._set_state(ref, "restart", force=True)
            raw = self._raw(ref)
            self._network_up(ref, raw)  # a new veth: address checked, port isolated again
        command = _command_of(raw.get("config") or {})
        if command:
            jobs.launch(self, ref, command)

    def remove(self, ref: str, *, force: bool = False) -> None:
        """Delete the container. An ephemeral one (``--rm``) may vanish by itself meanwhile:
        LXD deletes it once it stops, so "not found" after it was seen counts as removed."""
        with _boundary(container=ref, action="remove"):
            raw = self._raw(ref)
        ephemeral = bool(raw.get("ephemeral"))
        try:
            with _boundary(container=ref, action="remove"):
                if _state_of(raw) in (State.RUNNING, State.PAUSED):
                    if not force:
                        raise Conflict(f"container {ref} is running",
                                       hint=f"stop it first (cman stop lxd:{ref}) or use -f")
                    self._set_state(ref, "stop", force=True)
                    if ephemeral:
                        self._wait_gone(ref)
                        return
                self._delete(ref)
        except ContainerNotFound:
            if not ephemeral:
                raise

    def _wait_gone(self, ref: str, limit: float = 10.0) -> None:
        """An ephemeral container is deleted by LXD right after it stops."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.job_state(ref) is None:
                return
            time.sleep(0.05)
        self._delete(ref)

    def prune_leftovers(self, *, dry_run: bool = False) -> list[str]:
        """Instances a killed ``run`` created and never started, and temporary image tarballs
        of a killed ``image import`` (see :mod:`.leftovers`). Instances only on a local
        daemon: the PID in their label names a process of this host."""
        import tempfile

        from ...models import RUN_LABEL
        from . import leftovers

        found: list[leftovers.Leftover] = []
        if self.locality().local:
            with _boundary(action="list containers"):
                raw = self.client.api.instances.get(params={"recursion": "2"}).json()["metadata"]

            def has_job(instance: Mapping[str, Any]) -> bool | None:
                pid = (instance.get("state") or {}).get("pid")
                return leftovers.runs_job(int(pid)) if pid else None

            found += leftovers.abandoned_instances(raw, CFG_LABEL + RUN_LABEL, CFG_MANAGED, has_job)
            if not leftovers.import_in_progress(Path(tempfile.gettempdir())):
                from .imagebuild import SOURCE_PROPERTY

                with _boundary(action="list images"):
                    images = self.client.api.images.get(params={"recursion": "1"}).json()["metadata"]
                found += leftovers.unnamed_imports(images, raw, SOURCE_PROPERTY)
        found += leftovers.abandoned_tarballs(Path(tempfile.gettempdir()))
        lines = []
        for item in found:
            if not dry_run:
                if item.kind == "container":
                    try:
                        # A never-started one is refused if someone started it meanwhile.
                        self.remove(item.name, force=item.running)
                    except (ContainerNotFound, Conflict):
                        continue
                elif item.kind == "image":
                    try:
                        self.image_remove(item.name)  # refused if a container was made from it meanwhile
                    except (ImageNotFound, Conflict):
                        continue
                else:
                    Path(item.name).unlink(missing_ok=True)
            lines.append(item.line())
        return lines

    # -- reading ------------------------------------------------------------------------------

    @idempotent(_is_transient)
    def containers(self, *, all: bool = False) -> list[Container]:  # noqa: A002
        """Every instance and its status (``recursion=1``): no PIDs or addresses, whose state costs
        the daemon ms per instance; ``inspect`` has them, :meth:`init_pids` finds PIDs cheaply."""
        path = self._socket
        if path is not None:
            # The hot path of `cman ps`: stdlib HTTP over the socket, no pylxd/requests import.
            try:
                raw = _http.get_json(path, "/1.0/instances", {"recursion": "1"})["metadata"]
            except (FileNotFoundError, PermissionError) as err:
                raise _unavailable(err) from err
            except _http.HTTPStatusError as err:
                raise _translate(err, container=None, image=None, action="list containers") from err
            except OSError as err:
                raise EngineUnavailable("lxd", f"cannot talk to the daemon at {path}: {err}",
                                        endpoint.fix_for_missing_daemon()) from err
        else:
            with _boundary(action="list containers"):
                raw = self.client.api.instances.get(params={"recursion": "1"}).json()["metadata"]
        items = [_container_from_raw(r) for r in raw]
        return [c for c in items if all or c.state in (State.RUNNING, State.PAUSED)]

    @idempotent(_is_transient)
    def inspect(self, ref: str) -> Container:
        with _boundary(container=ref):
            raw = self._raw(ref)
            exit_code = None
            if _state_of(raw) == State.STOPPED:
                exit_code = self._exit_code(ref, raw)
            return _container_from_raw(raw, exit_code)

    def _exit_code(self, ref: str, raw: Mapping[str, Any]) -> int | None:
        """The job's recorded exit code; None for a container without a job."""
        if not _command_of(raw.get("config") or {}):
            return None
        return jobs.exit_code(self, ref)

    def logs(self, ref: str, *, follow: bool = False) -> Iterator[LogChunk]:
        """The job's stdout and stderr (``-f`` polls until the container stops); a container
        without a job shows its console log."""
        with _boundary(container=ref, action="logs"):
            raw = self._raw(ref)
        if not _command_of(raw.get("config") or {}):
            yield from self._console_log(ref, follow=follow)
            return
        yield from jobs.logs(self, ref, follow=follow)

    def _console_log(self, ref: str, *, follow: bool) -> Iterator[LogChunk]:
        """The console log: LXD serves it for a stopped container (for a running one, 5.0 fails)."""
        from pylxd import exceptions as lxd_exc

        while True:
            with _boundary(container=ref, action="logs"):
                running = _state_of(self._raw(ref)) == State.RUNNING
                if not running:
                    try:
                        data = self.client.api.instances[ref].console.get(is_api=False).content
                    except lxd_exc.LXDAPIException:
                        data = b""
                    if data:
                        yield LogChunk("stdout", data)
                    return
            if not follow:
                return
            time.sleep(LOG_POLL)

    def wait(self, ref: str) -> int:
        """Block until the container stops (its job ended, or someone stopped it); the job's
        exit code (0 for a container without a job)."""
        with _boundary(container=ref, action="wait"):
            raw = self._raw(ref)
        if not _command_of(raw.get("config") or {}):
            while self.job_state(ref) not in (None, State.STOPPED, State.DEAD):
                time.sleep(POLL)
            return 0
        return jobs.wait(self, ref)

    @idempotent(_is_transient)
    def init_pid(self, ref: str) -> int | None:
        with _boundary(container=ref):
            raw = self._raw(ref)
        pid = (raw.get("state") or {}).get("pid")
        return int(pid) if pid and _state_of(raw) in (State.RUNNING, State.PAUSED) else None
