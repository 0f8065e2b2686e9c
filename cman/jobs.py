"""One job runner for system containers (LXD and raw LXC).

A system container boots its image's init; ``cman run IMAGE CMD`` makes CMD the
container's *job*, and the container lives as long as its job, as a Docker
container lives as long as its command. This module is that behaviour, once:
boot is the engine's, everything after it is here. An engine supplies only the
primitives of :class:`JobHost` (state, read a file, write a file, exec attached,
exec detached, its halt signal, kill).

**The design: the job is supervised inside the container, by a constant POSIX sh
script** (:data:`WRAPPER`), started with the engine's own detached exec::

    /bin/sh -c WRAPPER cman-job HALT_SIGNAL CMD...

It appends CMD's stdout and stderr to ``/var/log/cman/job.out`` and ``job.err``,
writes CMD's exit code to ``job.rc``, then halts the container (``poweroff -f``
when the image has it, else ``kill -HALT 1``, a shell builtin). CMD arrives as
positional arguments, so no shell string is ever built from user input.

Why this design rather than a supervisor process on the host:

- it works where cman has no host to run on: an LXD daemon reached over HTTPS;
- nothing of cman needs to stay alive, and there is no stored PID to go stale:
  the engine's state ("running") and the files are the whole truth, so ``wait``,
  ``logs -f`` and ``ps`` read the same facts on both engines;
- it needs only ``/bin/sh`` in the image (busybox and Debian both have it);
  ``poweroff`` and ``kill -HALT 1`` are both ways the engine itself stops init.

A foreground job (``run IMAGE CMD`` without ``-d``) runs through the engine's
attached exec with the caller's streams (a pty with ``-t``); what it printed (the
last MiB of each stream) and its exit code are then written to the same files, and
the container is killed, as Docker's PID-1 exit kills the rest of a container.
``start`` and ``restart`` boot the container and launch the job again; the output
files accumulate, as ``docker logs`` does over restarts.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, ClassVar, Protocol, cast

from .errors import CmanError, EngineError, Interrupted
from .models import LogChunk, State, StdIO

JOB_DIR = "/var/log/cman"
JOB_OUT = f"{JOB_DIR}/job.out"
JOB_ERR = f"{JOB_DIR}/job.err"
JOB_RC = f"{JOB_DIR}/job.rc"
JOB_ARGV0 = "cman-job"
DEFAULT_HALT = int(signal.SIGPWR)
"""LXC's and LXD's default ``lxc.signal.halt``: busybox init and sysvinit halt on it."""
KILLED_EXIT = 137
"""The exit code of a job that was killed before it could record its own (128 + SIGKILL)."""
OUTPUT_LIMIT = 1 << 20
"""How much of a foreground job's output (per stream) is kept for ``logs``."""
POLL = 0.25
"""Seconds between two looks at a job's state (wait, logs -f)."""

WRAPPER = (
    'halt=$1; shift; d=' + JOB_DIR + '; : >"$d/job.rc" || exit 125; trap : HUP INT TERM; '
    '"$@" >>"$d/job.out" 2>>"$d/job.err" </dev/null; '
    'echo "$?" >"$d/job.rc"; '
    'poweroff -f 2>/dev/null || kill -"$halt" 1'
)
"""The detached job's supervisor: a constant; CMD arrives as "$@" after the halt signal's number."""


class JobHost(Protocol):
    """What an engine supplies to run jobs. Errors are already cman errors."""

    name: ClassVar[str]

    def job_state(self, ref: str) -> State | None:
        """The container's state now; None once it is gone (an ephemeral one that stopped)."""
        ...

    def read_file(self, ref: str, path: str) -> bytes | None:
        """A file of the container, running or stopped; None when it does not exist."""
        ...

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        """Replace a file of the container, making its folders as needed."""
        ...

    def exec_attached(self, ref: str, command: Sequence[str], io: StdIO) -> int:
        """Run ``command`` with the caller's streams; its exit code. Interrupted is raised
        after the engine passed the signal on to the command."""
        ...

    def exec_detached(self, ref: str, argv: Sequence[str]) -> None:
        """Start ``argv`` in the running container with no streams, and return at once."""
        ...

    def halt_signal(self, ref: str) -> int:
        """The signal that makes this container's init halt."""
        ...

    def kill(self, ref: str) -> None:
        """Stop the container at once (no grace period)."""
        ...


def parse_rc(data: bytes | None) -> int | None:
    """The content of ``job.rc`` as an exit code; None when absent, empty or half-written."""
    if data is None:
        return None
    try:
        return int(data.strip())
    except ValueError:
        return None


def wrapper_argv(halt: int, command: Sequence[str]) -> list[str]:
    if not command:
        raise ValueError("a job needs a command")
    return ["/bin/sh", "-c", WRAPPER, JOB_ARGV0, str(int(halt)), *command]


def launch(host: JobHost, ref: str, command: Sequence[str]) -> None:
    """Start the job detached in a running container (``run -d``, ``start``, ``restart``).

    ``job.rc`` is emptied first, so until the job records its code a reader sees
    "no code yet" rather than the last run's.
    """
    host.write_file(ref, JOB_RC, b"")
    host.exec_detached(ref, wrapper_argv(host.halt_signal(ref), command))


def run_foreground(host: JobHost, ref: str, command: Sequence[str], io: StdIO) -> int:
    """Run the job attached to the caller's streams; record its output and code; kill the container."""
    from ._sys.tty import Tee  # only for foreground sessions

    out, err = Tee(io.stdout, OUTPUT_LIMIT), Tee(io.stderr, OUTPUT_LIMIT)
    teed = StdIO(io.stdin, cast(IO[bytes], out), cast(IO[bytes], err), io.tty)
    try:
        code = host.exec_attached(ref, command, teed)
    except Interrupted:
        # The job got the signal; cman stops waiting for it, so the container goes down
        # too rather than run on unattended. --rm then removes it (lifecycle).
        with contextlib.suppress(CmanError):
            host.kill(ref)
        raise
    with contextlib.suppress(CmanError):
        record(host, ref, code, bytes(out.data), bytes(err.data))
    with contextlib.suppress(CmanError):
        host.kill(ref)
    return code


def record(host: JobHost, ref: str, code: int, stdout: bytes, stderr: bytes) -> None:
    """Append a foreground job's output to the job's files and write its exit code."""
    for path, data in ((JOB_OUT, stdout), (JOB_ERR, stderr)):
        if data:
            host.write_file(ref, path, (host.read_file(ref, path) or b"") + data)
    host.write_file(ref, JOB_RC, f"{code}\n".encode())


def exit_code(host: JobHost, ref: str) -> int:
    """The recorded code of the last run; KILLED_EXIT when it ended before recording one."""
    code = parse_rc(host.read_file(ref, JOB_RC))
    return KILLED_EXIT if code is None else code


def wait(host: JobHost, ref: str) -> int:
    """Block until the container stops; the job's exit code.

    An ephemeral container is gone once it stopped, so its code is read while it
    still runs; a container removed before any code was seen is an error.
    """
    seen: int | None = None
    while True:
        state = host.job_state(ref)
        if state is None:
            if seen is not None:
                return seen
            raise EngineError(f"{host.name}: container {ref} was removed before its exit code could be read")
        if state in (State.STOPPED, State.DEAD):
            break
        if state == State.RUNNING:
            with contextlib.suppress(CmanError):
                seen = parse_rc(host.read_file(ref, JOB_RC))
        time.sleep(POLL)
    try:
        return exit_code(host, ref)
    except CmanError:
        if seen is not None:
            return seen
        raise


def logs(host: JobHost, ref: str, *, follow: bool = False) -> Iterator[LogChunk]:
    """The job's stdout and stderr; with ``follow``, new output until the container stops."""
    offsets = {JOB_OUT: 0, JOB_ERR: 0}
    streams: Mapping[str, str] = {JOB_OUT: "stdout", JOB_ERR: "stderr"}
    while True:
        running = follow and host.job_state(ref) == State.RUNNING
        for path, stream in streams.items():
            data = host.read_file(ref, path) or b""
            if len(data) < offsets[path]:  # rewritten: start over
                offsets[path] = 0
            if len(data) > offsets[path]:
                yield LogChunk(stream, data[offsets[path] :])  # type: ignore[arg-type]
                offsets[path] = len(data)
        if not running:
            return
        time.sleep(POLL)


def parse_signal(value: str | None, default: int = DEFAULT_HALT) -> int:
    """An LXC ``lxc.signal.*`` value (``SIGPWR``, ``PWR``, ``SIGRTMIN+3``, ``30``) as a number."""
    if not value:
        return default
    text = value.strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else f"SIG{text}"
    if name.startswith("SIGRTMIN+") and name[len("SIGRTMIN+"):].isdigit():
        return int(signal.SIGRTMIN) + int(name[len("SIGRTMIN+"):])
    try:
        return int(signal.Signals[name])
    except KeyError:
        return default
