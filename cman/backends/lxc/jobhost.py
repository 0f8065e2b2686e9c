"""The primitives :mod:`cman.jobs` runs a container's job with (its :class:`~cman.jobs.JobHost`).

Files of the job are read and written straight in the rootfs (an overlay's layers, read
merged and written into the upper: :mod:`.rootfs`), never through a symlink out of it;
commands run with ``lxc-attach`` (:mod:`.attach`), which puts them in the
container's cgroups, so their CPU and memory are accounted to the container.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ... import jobs
from ..._sys import files as _files
from ...errors import CmanError, ContainerNotFound, EngineError
from ...models import State
from . import rootfs
from .config import mapped_root
from .connection import LxcConnection
from .convert import STATES
from .tools import RUNNING, Paths, config_values, is_ephemeral

if TYPE_CHECKING:
    from ...models import StdIO

KILL_WAIT = 10.0
"""Seconds to wait for LXC to see a SIGKILLed init before ``lxc-stop -k`` takes over."""


class LxcJobHost(LxcConnection):
    def job_state(self, ref: str) -> State | None:
        st, _ = self._info(self._paths(ref))
        return None if st is None else STATES.get(st, State.UNKNOWN)

    def read_file(self, ref: str, path: str) -> bytes | None:
        paths = self._paths(ref)
        try:
            return rootfs.read_file(rootfs.layers(paths), path)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise EngineError(f"lxc: cannot read {path} in {ref}: {err.strerror or err}") from err

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        """Written as the container's root (the mapped one in an unprivileged container), so
        the job inside can write the file too. Refused once the container is gone (an
        ephemeral one that LXC is destroying: a new file would stand in its way)."""
        paths = self._paths(ref)
        if not paths.config.is_file():
            raise ContainerNotFound(ref, "lxc")
        try:
            rootfs.write_file(rootfs.layers(paths), path, data, owner=mapped_root(paths.config))
        except OSError as err:
            raise EngineError(f"lxc: cannot write {path} in {ref}: {err.strerror or err}") from err

    def prepare_job_files(self, paths: Paths) -> None:
        """Before a start that runs a job: the job's exit-code file in an overlay's upper layer
        (empty, unless it holds the last run's code), so that every write to it while the
        container runs is in place (see :mod:`.rootfs`). A plain rootfs needs nothing."""
        layers = rootfs.layers(paths)
        if layers.lower is None:
            return
        with contextlib.suppress(OSError):
            if _files.stat_beneath(layers.upper, jobs.JOB_RC) is None:
                rootfs.write_file(layers, jobs.JOB_RC, b"", owner=mapped_root(paths.config))

    def exec_attached(self, ref: str, command: Sequence[str], io: StdIO) -> int:
        from ...models import StdIO
        from .attach import attach_argv, attach_env, run_attached

        meta = self._meta(self._paths(ref))
        tty = io.tty or bool(meta.get("tty"))
        argv, env = attach_argv(self.lxcpath, ref, command, attach_env(meta.get("env") or {}, None, tty=tty))
        return run_attached(argv, StdIO(io.stdin, io.stdout, io.stderr, tty), tty=tty, env=env)

    def exec_detached(self, ref: str, argv: Sequence[str]) -> None:
        """lxc-attach in a session of its own, not waited for: it lives as long as the job."""
        from .attach import attach_argv, attach_env, spawn

        paths = self._paths(ref)
        meta = self._meta(paths)
        full, env = attach_argv(self.lxcpath, ref, argv, attach_env(meta.get("env") or {}, None, tty=False))
        with open(paths.lxclog, "ab") as errors:
            spawn(full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                  start_new_session=True, close_fds=True, env=env)

    def halt_signal(self, ref: str) -> int:
        """``lxc.signal.halt`` of the container's config (the image's template may set it), else SIGPWR."""
        values = config_values(self._paths(ref).config, ("lxc.signal.halt",))
        return jobs.parse_signal(values[-1][1] if values else None)

    def kill(self, ref: str) -> None:
        """SIGKILL the container's init, then wait until LXC has it stopped (an ephemeral one:
        destroyed, so ``--rm`` is kept when this returns). ``lxc-stop -k`` does the same, but
        its wait sleeps about 0.5 s, half of a whole ``run --rm IMAGE true``; polling the state
        sees the stop in ~20 ms. Falls back to ``lxc-stop -k`` if the container outlives that."""
        paths = self._paths(ref)
        state, init = self._info(paths)
        if state is None:
            return
        if init and state in RUNNING:
            ephemeral = is_ephemeral(paths.config)
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)
            deadline = time.monotonic() + KILL_WAIT
            while time.monotonic() < deadline:
                state, _ = self._info(paths)
                if state is None or (state == "STOPPED" and not ephemeral):
                    return
                time.sleep(0.01)
        with self._boundary(ref, "kill"):
            self._tool("lxc-stop", "-n", ref, "-k", timeout=60, check=False)


def job_end(paths: Paths) -> tuple[int, datetime | None]:
    """The job's recorded exit code and when it was recorded (from the rootfs, no tool call)."""
    layers = rootfs.layers(paths)
    try:
        code = jobs.parse_rc(rootfs.read_file(layers, jobs.JOB_RC))
        st = rootfs.stat_file(layers, jobs.JOB_RC)
    except OSError:
        return jobs.KILLED_EXIT, None
    when = datetime.fromtimestamp(st.st_mtime, tz=UTC) if st is not None else None
    return (jobs.KILLED_EXIT if code is None else code), when


def wait_ephemeral(host: LxcJobHost, paths: Paths) -> int:
    """The job's exit code of an ephemeral container, which LXC destroys (rootfs and all) as
    soon as it stops: too soon to read ``job.rc`` after the stop, and a look while it runs
    can come just before the code is written.

    So a descriptor of ``job.rc`` is held open while the container runs (opened again
    when the file is replaced, on a restart). The job writes its code into that file in
    place (``echo $? > job.rc``), and an open file outlives its name: once the container
    is gone the code is read from the descriptor. KILLED_EXIT when no code was written.
    """
    fd: int | None = None
    layers = rootfs.layers(paths)
    try:
        while True:
            state = host.job_state(paths.name)
            if state in (None, State.STOPPED, State.DEAD):
                break
            try:
                current = rootfs.stat_file(layers, jobs.JOB_RC)
            except OSError:  # gone meanwhile, or a symlink planted on the way: not ours to follow
                current = None
            if current is not None and (fd is None or os.fstat(fd).st_ino != current.st_ino):
                try:
                    fresh = rootfs.open_file(layers, jobs.JOB_RC)
                except OSError:
                    fresh = None
                if fresh is not None:
                    if fd is not None:
                        os.close(fd)
                    fd = fresh
            time.sleep(jobs.POLL)
        if state is not None:
            with contextlib.suppress(CmanError):
                code = jobs.parse_rc(host.read_file(paths.name, jobs.JOB_RC))
                if code is not None:
                    return code
        code = jobs.parse_rc(os.pread(fd, 64, 0)) if fd is not None else None
        return jobs.KILLED_EXIT if code is None else code
    finally:
        if fd is not None:
            os.close(fd)
