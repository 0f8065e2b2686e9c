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

**A foreground job** (``run IMAGE CMD`` without ``-d``) runs through the engine's
attached exec with the caller's streams (a pty with ``-t``), under a second constant
script, :data:`FOREGROUND_WRAPPER`, so that it ends its container also when cman is
SIGKILLed (``--rm`` then holds: the engine removes an ephemeral container once it
stops)::

    /bin/sh -c FOREGROUND_WRAPPER cman-job HALT_SIGNAL CMD...
    W:  { (CMD) 1>&3; echo $?; } | { read rc; echo $rc >job.rc; (halt init once W is gone) & exit $rc; }
           L: CMD's parent          R: the recorder

- CMD runs as a *synchronous* command (in a subshell of L, so that a builtin such as
  ``exit 3`` or ``exec prog`` ends CMD, not L), so it is in the terminal's foreground
  process group, reads the terminal, and gets Ctrl-C, Ctrl-Z and hang-ups from the
  terminal as any foreground job does; its stdout is the real one (fd 3).
- L and R are separate processes that survive the death of W, the process the engine
  exec'd: LXD SIGKILLs that process when the client's websocket drops (seen with LXD
  5.0.2: ``kill -9`` of the client), and lxc-attach outlives a killed cman. When CMD ends,
  L hands its status to R, R writes ``job.rc`` and exits with it, W exits with R's status,
  so a live cman gets CMD's exact code (126/127 from the shell, 128+N for signal N).
- Then init is asked to halt, ``kill -HALT_SIGNAL 1`` (a builtin), from a background
  subshell that first waits for W to be gone (a loop on the builtin ``kill -0``, which
  lasts until the engine has reaped W: an instant, since W exits right after R), so the
  engine has reported the code before init's shutdown can touch any process. That
  subshell ignores SIGHUP (a pty's hang-up when W, its session leader, exits) and keeps
  none of the session's descriptors open (fd 3 is closed with ``exec``, not with a
  redirection on a compound command, which a shell may keep a saved copy of), so the
  engine sees the job's output end when W ends. A live cman does not wait for that halt: it
  kills the container at once and then records what it saw.
- L, R and W trap HUP, INT and TERM, so they outlive a hang-up or a Ctrl-C that ends
  CMD and still record its code; CMD itself starts with the default dispositions (a
  caught signal is reset on exec).

What it does not do: forward to CMD a signal sent to W alone (LXD's exec "signal"
message). A POSIX shell runs a trap only after the foreground command it waits for
has ended, and the only way to stay responsive, an asynchronous command, starts CMD
with SIGINT and SIGQUIT ignored (POSIX, job control being off without a terminal), which
would break Ctrl-C in ``-it`` sessions for good. Nothing cman relies on is lost: when
cman is interrupted it stops waiting and kills the container itself.
With cman SIGKILLed the job runs on to its end, as a Docker container does after its
client was killed, and then the container stops; with ``-t`` the engine's closing of the
pty hangs CMD up, as closing a terminal does.

The output a foreground job printed (the last MiB of each stream) and its exit code are
written to the same files as a detached job's by cman, after the container was killed
(files of a stopped container can still be written; an ephemeral one is gone and needs
none).

``start`` and ``restart`` boot the container and launch the job again; the output
files accumulate, as ``docker logs`` does over restarts.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, ClassVar, Protocol, cast

from .errors import CmanError, EngineError, Interrupted
from .models import State

if TYPE_CHECKING:
    from .models import LogChunk, StdIO

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

FOREGROUND_WRAPPER = (
    'h=$1; shift; d=' + JOB_DIR + '; : >"$d/job.rc" 2>/dev/null; trap : HUP INT TERM; exec 3>&1; '
    '{ trap : HUP INT TERM; ("$@") 1>&3 3>&-; echo "$?"; } | '
    '{ exec 3>&-; trap "" HUP INT TERM; r=; read -r r; [ -n "$r" ] && echo "$r" >"$d/job.rc" 2>/dev/null; '
    '(exec >/dev/null 2>&1; trap "" HUP; while kill -0 "$$" 2>/dev/null; do :; done; kill -"$h" 1) & '
    'exit "${r:-' + str(KILLED_EXIT) + '}"; }'
)
"""The foreground job's wrapper (see the module's docstring): a constant; CMD arrives as "$@"
after the halt signal's number. Uses only sh builtins."""


CHECK_COMMAND = (
    'c=$1; case $c in */*) if [ ! -e "$c" ]; then echo 127; elif [ -d "$c" ] || [ ! -x "$c" ]; then echo 126; '
    'else echo 0; fi;; *) if command -v -- "$c" >/dev/null 2>&1; then echo 0; else echo 127; fi;; esac'
)
"""Constant: prints 0, 126 (not executable) or 127 (not found) for the command name "$1", as
the shell that will run the job resolves it (builtins, the container's PATH). Run before a
job starts, so a command that cannot run fails the start, as Docker's does."""


def check_argv(program: str) -> list[str]:
    """The argv that asks a container whether it can run ``program`` (see :data:`CHECK_COMMAND`)."""
    return ["/bin/sh", "-c", CHECK_COMMAND, "cman-check", program]


def check_verdict(returncode: int, stdout: bytes | str) -> int | None:
    """0, 126 or 127 from the check's output; None when the check itself could not run."""
    text = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout
    verdict = text.strip()
    return int(verdict) if returncode == 0 and verdict in ("0", "126", "127") else None


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
    text = data.strip()
    if not (text.isascii() and text.isdigit()):  # the container writes this file: trust only 0-255
        return None
    code = int(text)
    return code if code <= 255 else None


def wrapper_argv(halt: int, command: Sequence[str]) -> list[str]:
    if not command:
        raise ValueError("a job needs a command")
    return ["/bin/sh", "-c", WRAPPER, JOB_ARGV0, str(int(halt)), *command]


def foreground_argv(halt: int, command: Sequence[str]) -> list[str]:
    if not command:
        raise ValueError("a job needs a command")
    return ["/bin/sh", "-c", FOREGROUND_WRAPPER, JOB_ARGV0, str(int(halt)), *command]


def launch(host: JobHost, ref: str, command: Sequence[str]) -> None:
    """Start the job detached in a running container (``run -d``, ``start``, ``restart``).

    ``job.rc`` is emptied first, so until the job records its code a reader sees
    "no code yet" rather than the last run's.
    """
    host.write_file(ref, JOB_RC, b"")
    host.exec_detached(ref, wrapper_argv(host.halt_signal(ref), command))


def run_foreground(host: JobHost, ref: str, command: Sequence[str], io: StdIO) -> int:
    """Run the job attached to the caller's streams under :data:`FOREGROUND_WRAPPER`; kill
    the container; record the job's output and code."""
    from ._sys.tty import Tee  # only for foreground sessions
    from .models import StdIO

    out, err = Tee(io.stdout, OUTPUT_LIMIT), Tee(io.stderr, OUTPUT_LIMIT)
    teed = StdIO(io.stdin, cast(IO[bytes], out), cast(IO[bytes], err), io.tty)
    with contextlib.suppress(CmanError):  # "no code yet", and the folder the wrapper writes into
        host.write_file(ref, JOB_RC, b"")
    try:
        code = host.exec_attached(ref, foreground_argv(host.halt_signal(ref), command), teed)
    except Interrupted:
        # The job got the signal; cman stops waiting for it, so the container goes down
        # too rather than run on unattended. --rm then removes it (lifecycle).
        with contextlib.suppress(CmanError):
            host.kill(ref)
        raise
    # The wrapper has asked init to halt; kill now rather than wait for init's shutdown,
    # then record (files of a stopped container can be written; an ephemeral one is gone).
    with contextlib.suppress(CmanError):
        host.kill(ref)
    with contextlib.suppress(CmanError):
        record(host, ref, code, bytes(out.data), bytes(err.data))
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
    from .models import LogChunk

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
    number: int | None = None
    name = text if text.startswith("SIG") else f"SIG{text}"
    offset = name[len("SIGRTMIN+"):]
    if text.isascii() and text.isdigit():
        number = int(text)
    elif name.startswith("SIGRTMIN+") and offset.isascii() and offset.isdigit():
        number = int(signal.SIGRTMIN) + int(offset)
    else:
        try:
            number = int(signal.Signals[name])
        except KeyError:
            return default
    return number if 0 < number <= int(signal.SIGRTMAX) else default  # 0 is no signal at all
