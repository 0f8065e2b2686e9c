"""Container verbs of the LXC backend: system containers that live as long as their command.

- The container boots its image's init (``lxc-start -d``, then ``lxc-wait -s RUNNING``);
  ``CMD`` runs inside it as *the container's job* (:mod:`cman.jobs`) via ``lxc-attach``,
  with a clean environment (``--clear-env``; PATH, HOME, TERM with a tty, then ``-e``
  variables).
- ``run IMAGE CMD`` (foreground) returns CMD's exit code; ``run -d IMAGE CMD`` leaves CMD
  running in the background, supervised inside the container.
- When CMD exits, the container is stopped (as Docker kills what is left when PID 1
  exits) and its state shows the exit code. ``start`` of a stopped container runs CMD again.
- With no CMD: ``run -d`` boots the container and leaves init running (a plain system
  container, until ``cman stop``); ``run -i``/``-it`` runs the image's default command
  (``/bin/sh``); ``run`` without ``-i`` boots the container and returns 0.
- ``--rm`` (``auto_remove``, foreground or ``-d``) sets ``lxc.ephemeral = 1``: LXC destroys
  the container when it stops, also when cman was killed meanwhile. ``wait``, ``inspect``
  and ``remove`` expect it to vanish at any moment.
- Unprivileged by default (:mod:`.idmap`): a user namespace over the subordinate ids of
  the user running cman, a rootfs shifted to them, LXC's generated AppArmor profile where
  the host has AppArmor. ``--privileged`` drops all three.
- ``logs`` prints the job's output; a container without a job shows init's console log
  (``logs -f`` follows it until the container stops).
- ``--env`` applies to the command and to ``exec``, not to init. Labels live in cman.json.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import jobs
from ..._sys import files as _files
from ..._sys import proc as _proc
from ..._sys.times import now_iso
from ...errors import CmanError, CommandNotRunnable, Conflict, ContainerNotFound, EngineError, InvalidValue, NameInUse
from ...models import Container, State
from ...oci import imageconfig
from ...validate import check_config_value
from . import net
from .config import config_entries, extra_entries, limits_of, render_config, write_config
from .convert import to_container
from .idmap import IdMap, blocking_folder, check_reachable, host_idmap, prepare_container_dir
from .jobhost import LxcJobHost, job_end, wait_ephemeral
from .layerusers import add_user
from .networks import LxcNetworks
from .rootfs import Layers, make_upper, overlay_usable
from .store import PLAIN_KEY, REMOVED_MARK
from .tools import NEW_DIR_PREFIX, RUNNING, Paths, first_error, info

if TYPE_CHECKING:
    from ...models import ContainerSpec, LogChunk, StdIO


class StartFailed(EngineError):
    """lxc-start returned, but the container is not running."""


class LxcContainers(LxcJobHost, LxcNetworks):
    @classmethod
    def validate_spec(cls, spec: ContainerSpec) -> None:
        """Variable names become names in lxc-attach's environment and on its argv."""
        for key in spec.env:
            if not key or "=" in key or "\0" in key:
                raise InvalidValue("-e/--env", key, "bad variable name")
        extra_entries(spec)  # the profile's raw keys against the allowlist

    def create(self, spec: ContainerSpec) -> Container:
        name = spec.name if spec.name is not None else f"cman-{os.urandom(4).hex()}"
        self.validate_name(name)
        self.validate_spec(spec)
        joining = self._check_network_options(spec)
        check_config_value("image", spec.image)
        limits = limits_of(spec)
        idmap = None if spec.privileged else host_idmap()
        paths = self._paths(name)
        with _files.locked(self._lock_path):
            if paths.dir.exists():
                raise NameInUse(name, "lxc")
            with self.store.lock():
                image = self.store.get(spec.image)
                config = render_config(config_entries(paths, spec, image, limits, idmap=idmap))
                if idmap is not None:  # after every check of the input: bad input is exit 2 first
                    check_reachable(self.lxcpath, idmap)
                # Until its config exists this is a half-made container, marked with whose
                # it is from the start (made under a temporary name, then renamed), so
                # prune_leftovers never touches one that a live cman is making.
                mark = _proc.mark()
                work = Path(self.lxcpath) / f"{NEW_DIR_PREFIX}{mark.replace(':', '-')}-{os.urandom(4).hex()}"
                try:
                    prepare_container_dir(work, idmap)
                    _files.atomic_write(work / paths.creating.name, mark, mode=0o600)
                    work.rename(paths.dir)
                except BaseException:
                    shutil.rmtree(work, ignore_errors=True)
                    raise
                lower = self._lower_layer(paths, spec, image, idmap)
                if lower is not None:
                    config = render_config(config_entries(paths, spec, image, limits, idmap=idmap, lower=lower))
                try:
                    _files.write_json(paths.meta, {
                        "managed": True,
                        "name": name,
                        "image": spec.image,
                        "image_id": image["id"],
                        "command": list(spec.command),
                        "default_command": list(image.get("default_command", [])),
                        "env": dict(spec.env),
                        "labels": dict(spec.labels),
                        "tty": spec.tty,
                        "interactive": spec.interactive,
                        "cpus": spec.cpus,
                        "memory": spec.memory,
                        "auto_remove": spec.auto_remove,
                        "privileged": spec.privileged,
                        "nesting": spec.nesting,
                        "idmap": [idmap.uid, idmap.gid, idmap.count] if idmap else None,
                        "created": now_iso(),
                        "network": None,
                        "ip": None,
                        "dns": list(spec.dns),
                        "dns_search": list(spec.dns_search),
                        "rootfs_lower": None if lower is None else str(lower),
                    }, mode=0o600)  # the environment may hold secrets
                    _files.write_json(paths.state, {"run": 0, "started": None, "finished": None, "exit_code": None})
                    self._make_rootfs(paths, image, idmap, lower)
                    if joining is None:
                        net.write_dns(Layers(paths.rootfs, lower), None, spec, owner=idmap.root if idmap else None)
                        write_config(paths, config)  # last: only now does lxc-ls see the container
                except BaseException:
                    shutil.rmtree(paths.dir, ignore_errors=True)
                    raise
        if joining is not None:
            # The address is allocated under the host-wide network lock, taken without the
            # LXC path's lock held (lock order); until the config exists no other cman
            # process sees this container, and the directory keeps its name taken.
            try:
                self._join_network(paths, spec, image, limits, str(joining["name"]), idmap, lower)
            except BaseException:
                shutil.rmtree(paths.dir, ignore_errors=True)
                raise
        paths.creating.unlink(missing_ok=True)
        return self.inspect(name)

    def _lower_layer(self, paths: Paths, spec: ContainerSpec, image: dict[str, Any],
                     idmap: IdMap | None) -> Path | None:
        """The image's rootfs (shifted for ``idmap``, made once) that the container's overlay
        stands on; None where a plain rootfs is made instead (see :mod:`.rootfs`). Caller holds
        the store's lock."""
        if spec.nesting:
            return None
        cache = self.store.dir_of(image) / f"rootfs.{idmap.key if idmap is not None else PLAIN_KEY}"
        if not overlay_usable(cache, paths.rootfs):
            return None
        if idmap is not None and not self.store.share(image, idmap):
            return None
        lower = self.store.shifted_rootfs(image, idmap)
        if idmap is not None and blocking_folder(lower, idmap) is not None:
            return None
        return lower

    def _make_rootfs(self, paths: Paths, image: dict[str, Any], idmap: IdMap | None,
                     lower: Path | None = None) -> None:
        """The container's rootfs: an overlay's upper layer over ``lower``; else unpacked as it
        is for a privileged container, a copy of the image's shifted rootfs for an unprivileged one."""
        if lower is not None:
            add_user(self.store.dir_of(image), lower, paths.dir)
            make_upper(paths.rootfs, lower, idmap.root if idmap is not None else None)
            return
        if idmap is None:
            paths.rootfs.mkdir(mode=0o755)
            self.store.unpack(image, paths.rootfs)
            return
        source = self.store.shifted_rootfs(image, idmap)
        _proc.run(["cp", "-a", "--reflink=auto", "--", str(source), str(paths.rootfs)], timeout=900,
                  backend="lxc")

    def _boot(self, paths: Paths, *, job: bool = False) -> int | None:
        """Start the container unless it runs; return its init PID. ``job``: a job runs next,
        so its files are made first (:meth:`~.jobhost.LxcJobHost.prepare_job_files`)."""
        st, pid = self._info(paths)
        if st in RUNNING:
            return pid
        if job:
            self.prepare_job_files(paths)
        state = _files.read_json(paths.state) or {}
        previous = {k: state.get(k) for k in ("started", "finished")}
        network = self._network_up(paths)
        self._update_state(paths, started=now_iso(), finished=None)
        try:
            log_offset = paths.lxclog.stat().st_size
        except OSError:
            log_offset = 0
        done = self._tool("lxc-start", "-n", paths.name, "-d", timeout=60, check=False)
        st, pid = info(self.lxcpath, paths.name)
        if st in ("STARTING",):
            self._tool("lxc-wait", "-n", paths.name, "-s", "RUNNING", "-t", "10", timeout=20, check=False)
            st, pid = info(self.lxcpath, paths.name)
        if st not in RUNNING or pid is None:
            detail = first_error(paths, log_offset) or (done.stderr.strip().splitlines() or ["no error logged"])[-1]
            with contextlib.suppress(OSError, CmanError):  # it never ran: back to what it was (e.g. "created")
                self._update_state(paths, **previous)
            raise StartFailed(
                f"lxc: container {paths.name} did not start: {detail}",
                hint=f"see {paths.lxclog}, or watch it boot: lxc-start -P {self.lxcpath} -n {paths.name} -F",
            )
        if network is not None and not network.icc and network.bridge:
            self._isolate(paths, pid, network)
        return pid

    def start(self, ref: str) -> None:
        paths = self._existing(ref)
        st, _ = self._info(paths)
        if st in RUNNING:
            return
        meta = self._meta(paths)
        before = _files.read_json(paths.state) or {}
        command = meta.get("command") or []
        if not command:
            self._boot(paths)
            return
        # "job_pending" is set from before the boot until the job is launched: a cman killed in
        # between leaves it, and system prune knows the container never got its job, even once
        # it has stopped (see leftovers.py). Every failure that cman sees clears it.
        self._update_state(paths, job_pending=True)
        try:
            self._boot(paths, job=True)
            self._check_command(paths, command, meta, before)
            jobs.launch(self, paths.name, command)
        finally:
            with contextlib.suppress(OSError, CmanError):
                self._update_state(paths, job_pending=None)

    def start_attached(self, ref: str, io: StdIO) -> int:
        paths = self._existing(ref)
        meta = self._meta(paths)
        before = _files.read_json(paths.state) or {}
        command = list(meta.get("command") or [])
        if not command and io.stdin is not None:
            command = list(meta.get("default_command") or ["/bin/sh"])
        if not command:
            self._boot(paths)
            return 0  # a system container was asked for: it stays up
        # As in start(): marked from before the boot until the job is about to begin, so a run
        # killed in between (even before lxc-start ran) leaves a mark that system prune reads.
        self._update_state(paths, job_pending=True)
        try:
            self._boot(paths, job=True)
            self._check_command(paths, command, meta, before)
        finally:
            with contextlib.suppress(OSError, CmanError):
                self._update_state(paths, job_pending=None)
        return jobs.run_foreground(self, paths.name, command, io)

    def _check_command(self, paths: Paths, command: Sequence[str], meta: dict[str, Any],
                       before: dict[str, Any]) -> None:
        """Can the container run ``command``? If not, its start failed, as Docker's does when
        the command cannot be executed: the container is stopped, its state goes back to
        what it was (a new one is "created", so ``run`` removes it), and the error carries
        126 or 127. Checked in the container, with the job's environment (its PATH)."""
        from .attach import attach_argv, attach_env

        argv, env = attach_argv(self.lxcpath, paths.name, jobs.check_argv(command[0]),
                                attach_env(meta.get("env") or {}, None, tty=False))
        done = _proc.run(argv, env=env, timeout=60, check=False, backend="lxc")
        code = jobs.check_verdict(done.returncode, done.stdout)
        if code == 0:
            return
        with contextlib.suppress(CmanError):
            self._tool("lxc-stop", "-n", paths.name, "-k", timeout=60, check=False)
        if paths.config.exists():
            with contextlib.suppress(OSError, CmanError):
                self._update_state(paths, started=before.get("started"), finished=before.get("finished"))
        if code is None:
            detail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise StartFailed(f"lxc: cannot run a command in {paths.name}: {detail}",
                              hint="the image needs /bin/sh for cman's job runner")
        raise CommandNotRunnable("lxc", paths.name, command[0], code)

    def stop(self, ref: str, *, timeout: float = 10) -> None:
        paths = self._existing(ref)
        st, _ = self._info(paths)
        if st not in RUNNING:
            return
        grace = max(0, math.ceil(timeout))
        with self._boundary(paths.name, "stop"):
            if grace > 0:
                self._tool("lxc-stop", "-n", paths.name, "-t", str(grace), timeout=grace + 30, check=False)
            st, _ = info(self.lxcpath, paths.name)
            if st in RUNNING:
                self._tool("lxc-stop", "-n", paths.name, "-k", timeout=60, check=False)
                st, _ = info(self.lxcpath, paths.name)
        if st in RUNNING:
            raise EngineError(f"lxc: container {paths.name} is still {st} after lxc-stop -k",
                              hint=f"see {paths.lxclog}")
        if paths.dir.exists():
            with contextlib.suppress(OSError, CmanError):
                state = _files.read_json(paths.state) or {}
                if not state.get("finished"):
                    self._update_state(paths, finished=now_iso())

    def remove(self, ref: str, *, force: bool = False) -> None:
        paths = self._existing(ref)
        meta = self._meta(paths)
        network = meta.get("network")
        lower = meta.get("rootfs_lower")
        with _files.locked(self._lock_path):
            if not paths.config.exists():  # removed meanwhile (an ephemeral one stopping, another cman)
                raise ContainerNotFound(ref, "lxc")
            st, _ = self._info(paths)
            if st in RUNNING:
                if not force:
                    raise Conflict(f"container {paths.name} is running",
                                   hint=f"stop it first (cman stop lxc:{paths.name}) or use rm -f")
                with self._boundary(paths.name, "kill"):
                    self._tool("lxc-stop", "-n", paths.name, "-k", timeout=60, check=False)
                    st, _ = info(self.lxcpath, paths.name)
                if st in RUNNING:
                    raise EngineError(f"lxc: container {paths.name} is still {st} after lxc-stop -k")
            if paths.config.exists():
                done = self._tool("lxc-destroy", "-n", paths.name, timeout=300, check=False)
                if done.returncode != 0 and paths.config.exists():
                    st, _ = info(self.lxcpath, paths.name)
                    if st in RUNNING:
                        raise EngineError(f"lxc: could not destroy {paths.name}: it is {st}")
            shutil.rmtree(paths.dir, ignore_errors=True)  # cman's own files, or what lxc-destroy left
            if lower and (Path(lower).parent / REMOVED_MARK).exists():  # the last on a removed image?
                with self.store.lock():
                    self.store.collect_orphans(Path(lower).parent)
        if network:  # after the LXC path's lock: the network lock comes first in the lock order
            self._release_address(paths.name, str(network))

    def _container(self, paths: Paths, st: str | None, pid: int | None) -> Container:
        run = _files.read_json(paths.state) or {}
        return to_container(paths, st, pid, _files.read_json(paths.meta), run, lambda: job_end(paths))

    def containers(self, *, all: bool = False) -> list[Container]:  # noqa: A002
        """The LXC path's containers, each with its cman.json, state and init PID.

        State comes from liblxc's monitor processes (:func:`cman.cgroups.scan.lxc_monitors`),
        not from ``lxc-ls -f``, which costs about 2.5 ms of CPU per container: a monitor with
        an init child under this LXC path is RUNNING (FROZEN when its cgroup is), no monitor
        of that name at all is STOPPED. Anything else - a monitor between states, one under
        a path spelled differently - is asked with ``lxc-info``.
        """
        from ...cgroups import default_reader, scan

        names = self._container_dirs()
        reader = default_reader()
        monitors = scan.lxc_monitors(reader)
        watched = {name for _, name in monitors}
        out = []
        for name in names:
            pid = monitors.get((self.lxcpath, name))
            if pid is not None:
                st: str | None = "FROZEN" if scan.frozen(reader, pid) else "RUNNING"
            elif name not in watched:
                st = "STOPPED"
            else:
                st, pid = self._info(self._paths(name))
            if st is None:
                continue  # destroyed while it was read
            container = self._container(self._paths(name), st, pid)
            if all or container.state in (State.RUNNING, State.PAUSED, State.RESTARTING):
                out.append(container)
        return out

    def inspect(self, ref: str) -> Container:
        paths = self._existing(ref)
        st, pid = self._info(paths)
        container = self._container(paths, st, pid) if st is not None else None
        if container is None or (container.managed is False and not paths.config.is_file()):
            raise ContainerNotFound(ref, "lxc")  # gone, or destroyed while it was read (ephemeral)
        return container

    def exec(
        self,
        ref: str,
        command: Sequence[str],
        io: StdIO,
        *,
        env: dict[str, str] | None = None,
    ) -> int:
        from .attach import attach_argv, attach_env, run_attached

        paths = self._existing(ref)
        st, _ = self._info(paths)
        if st not in RUNNING:
            raise Conflict(f"container {paths.name} is not running",
                           hint=f"start it first: cman start lxc:{paths.name}")
        meta = self._meta(paths)
        label = (meta.get("labels") or {}).get(imageconfig.EXEC_LABEL)
        command = imageconfig.exec_argv(label, command)  # the image's WorkingDir and User, as docker exec
        argv, attach_environ = attach_argv(self.lxcpath, paths.name, command,
                                           attach_env(meta.get("env") or {}, env, tty=io.tty))
        return run_attached(argv, io, tty=io.tty, env=attach_environ)

    def logs(self, ref: str, *, follow: bool = False) -> Iterator[LogChunk]:
        """The job's output; for a container without a job, init's console log."""
        from ...models import LogChunk

        paths = self._existing(ref)
        if self._meta(paths).get("command"):
            yield from jobs.logs(self, paths.name, follow=follow)
            return
        console = _files.TailReader(paths.console)
        while True:
            running = follow and self.job_state(paths.name) == State.RUNNING
            data = console.read()
            if data:
                yield LogChunk("stdout", data)
            if not running:
                return
            time.sleep(jobs.POLL)

    def wait(self, ref: str) -> int:
        """Until the container stops (it stops when its command exits); the command's exit
        code, or 0 for a container without a command. An ephemeral container (``--rm``)
        may be gone by then: see :func:`.jobhost.wait_ephemeral`."""
        paths = self._existing(ref)
        meta = self._meta(paths)
        if not meta and not paths.config.is_file():
            raise ContainerNotFound(ref, "lxc")  # destroyed between the two looks
        if meta.get("command") and meta.get("auto_remove"):
            return wait_ephemeral(self, paths)
        if meta.get("command"):
            return jobs.wait(self, paths.name)
        while self.job_state(paths.name) not in (None, State.STOPPED, State.DEAD):
            time.sleep(jobs.POLL)
        return 0

    def init_pid(self, ref: str) -> int | None:
        paths = self._existing(ref)
        with self._boundary(paths.name, "read the init PID of"):
            out = self._tool("lxc-info", "-n", paths.name, "-p", "-H", timeout=15).stdout.strip()
        return int(out) if out.isascii() and out.isdigit() else None
