"""Running a command inside a container with ``lxc-attach``, streams wired two ways.

- **tty**: lxc-attach allocates a pty in the container only when it has a terminal, and
  it uses its *controlling* terminal (/dev/tty), flushing pending input when it switches
  that to raw mode. So cman gives it a pty pair of its own: lxc-attach runs under
  ``setsid --ctty`` with the pty's slave as stdin/stdout/stderr and controlling terminal;
  cman puts the local terminal (if any) in raw mode without flushing, forwards input only
  once lxc-attach has made the pty raw (keys typed during boot survive), copies output
  back, and passes window sizes on (initially and on SIGWINCH). The same path serves
  library callers whose streams are ``io.BytesIO``.
- **no tty**: stdout and stderr are pipes, copied to the caller's streams (and, for a
  container's own command, into its output log); no fd lxc-attach sees is a terminal,
  and it runs in cman's session, so no pty is allocated. A real non-terminal stdin
  (file, pipe) is handed over as is; a terminal or an in-memory stream is pumped.

Exit codes are lxc-attach's: the command's code, 126/127 when it cannot be executed,
128+N when it was killed by signal N.

**The environment never goes on argv** (``--set-var K=V`` would show every value in
``/proc/PID/cmdline`` to any local user for as long as the command runs): lxc-attach
itself gets the command's environment, and ``--clear-env --keep-var K`` (names only)
passes it on. A process's environment is readable only by its owner. Variables the
host's dynamic loader and C library read when lxc-attach itself starts (``LD_PRELOAD``,
``LD_LIBRARY_PATH``, ... :data:`HOST_READ`) must not act on the host: they travel
under another name and a constant ``/bin/sh`` script (:data:`RESTORE`) gives them their
own name back inside the container just before the command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from ..._sys import proc as _proc
from ..._sys import tty as _tty
from ...errors import InvalidValue

if TYPE_CHECKING:
    from ...models import StdIO

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def spawn(argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
    """``_proc.spawn`` for lxc-attach and its helpers."""
    return _proc.spawn(argv, backend="lxc", **popen)


def attach_env(container_env: Mapping[str, str], extra: Mapping[str, str] | None, *, tty: bool) -> dict[str, str]:
    """A clean environment: PATH, HOME, TERM (with a tty), then the container's and the call's."""
    env = {"PATH": DEFAULT_PATH, "HOME": "/root"}
    if tty:
        env["TERM"] = os.environ.get("TERM") or "xterm"
    env.update(container_env)
    env.update(extra or {})
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise InvalidValue("-e/--env", f"{key}={value}", "bad variable name or NUL byte")
    return env


HOST_READ = (
    "GCONV_PATH", "GLIBC_TUNABLES", "LD_ASSUME_KERNEL", "LD_AUDIT", "LD_BIND_NOT", "LD_BIND_NOW", "LD_DEBUG",
    "LD_DEBUG_OUTPUT", "LD_DYNAMIC_WEAK", "LD_HWCAP_MASK", "LD_LIBRARY_PATH", "LD_ORIGIN_PATH",
    "LD_POINTER_GUARD", "LD_PREFER_MAP_32BIT_EXEC", "LD_PRELOAD", "LD_PROFILE", "LD_PROFILE_OUTPUT",
    "LD_SHOW_AUXV", "LD_TRACE_LOADED_OBJECTS", "LD_USE_LOAD_BIAS", "LD_VERBOSE", "LD_WARN", "LOCPATH",
    "MALLOC_CHECK_", "MALLOC_PERTURB_", "MALLOC_TRACE",
)
"""Variables glibc's loader and libc act on when a program starts (ld.so(8), glibc's unsecvars.h)."""
CARRIER = "CMAN_HOSTENV_"
"""The name a :data:`HOST_READ` variable travels under, through lxc-attach."""
RESTORE = "".join(
    f'if [ -n "${{{CARRIER}{n}+x}}" ]; then export {n}="${CARRIER}{n}"; unset {CARRIER}{n}; fi; ' for n in HOST_READ
) + 'exec "$@"'
"""Constant: gives each carried variable its own name back, then runs the command ("$@")."""


def _program(name: str) -> str:
    """``name`` found on cman's PATH: the child's PATH is the container's, maybe the user's."""
    return shutil.which(name) or name


def attach_argv(lxcpath: str, name: str, command: Sequence[str],
                env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The lxc-attach command line (variable names only) and the environment to start it with."""
    if not command:
        raise InvalidValue("COMMAND", "", "give a command to run")
    carried = {(f"{CARRIER}{k}" if k in HOST_READ else k): v for k, v in env.items()}
    argv = [_program("lxc-attach"), "-P", lxcpath, "-n", name, "--clear-env",
            *(f"--keep-var={key}" for key in carried)]
    if any(k in HOST_READ for k in env):
        command = ["/bin/sh", "-c", RESTORE, "cman-env", *command]
    return [*argv, "--", *command], carried


def _code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def run_attached(argv: Sequence[str], io: StdIO, *, tty: bool, env: Mapping[str, str]) -> int:
    """Run ``argv`` (an lxc-attach command line) in ``env`` with ``io``; return the exit code."""
    for stream in (io.stdout, io.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if tty:
        return _run_on_pty(argv, io, env)
    return _run_piped(argv, io, env)


class _PtyInbound:
    """stdin into the pty master. The end of a stdin that is not a terminal (a pipe, a file,
    an in-memory stream) is a Ctrl-D, as a user would type it."""

    def __init__(self, master: int, eof: bool) -> None:
        self.master = master
        self.eof = eof

    def send(self, data: bytes) -> bool:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.master, view) :]
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self.eof:
            self.send(b"\x04")


def _run_on_pty(argv: Sequence[str], io: StdIO, env: Mapping[str, str]) -> int:
    """cman sits between the caller's streams and lxc-attach on a pty pair of its own.

    lxc-attach sees a terminal (so it gives the command a pty in the container, and
    forwards window sizes); cman forwards input only once lxc-attach has switched that
    pty to raw mode, so keys typed while the container boots are not flushed away, and
    passes window changes (SIGWINCH) on to the pty and to lxc-attach.
    """
    import pty
    import signal

    term_fd = _tty.terminal_fd(io)
    master, slave = pty.openpty()
    _tty.copy_window_size(term_fd, slave)
    try:
        # lxc-attach talks to its controlling terminal (/dev/tty), not to its stdin: give it
        # a session of its own whose controlling terminal is our pty (util-linux setsid -c).
        proc = spawn([_program("setsid"), "--ctty", *argv], stdin=slave, stdout=slave, stderr=slave,
                     close_fds=True, env=dict(env))
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    in_fd = _tty.fileno(io.stdin)
    slave_open = [True]
    ready_deadline = time.monotonic() + 10

    def input_ready() -> bool:
        if slave_open[0] and (_tty.is_raw(slave) or time.monotonic() > ready_deadline):
            os.close(slave)  # lxc-attach owns it now; EIO on master once it exits
            slave_open[0] = False
        return not slave_open[0]

    def idle() -> bool:
        """Nothing arrived for a while: go on unless lxc-attach has exited."""
        return not input_ready() or proc.poll() is None

    def resize(_rows: int, _cols: int) -> None:
        _tty.copy_window_size(term_fd, master)
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGWINCH)

    inbound = _PtyInbound(master, eof=in_fd is None or not os.isatty(in_fd))
    try:
        with _tty.raw_terminal(io.stdin):
            _tty.pump(io, [_tty.FdChannel(master)], inbound if io.stdin is not None else None,
                      resize=resize if term_fd is not None else None, input_ready=input_ready,
                      idle=idle, poll=0.05)
        return _code(proc.wait())
    finally:
        _stop(proc)
        os.close(master)
        if slave_open[0]:
            os.close(slave)


def _feed(source: IO[bytes], sink: IO[bytes]) -> None:
    fd = _tty.fileno(source)
    try:
        if fd is None:
            data = source.read()
            if data:
                sink.write(data)
        else:
            while chunk := os.read(fd, 65536):
                sink.write(chunk)
                sink.flush()
    except (BrokenPipeError, OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError, ValueError):
            sink.close()


def _run_piped(argv: Sequence[str], io: StdIO, env: Mapping[str, str]) -> int:
    stdin_fd = _tty.fileno(io.stdin)
    stdin: Any
    if io.stdin is None:
        stdin = subprocess.DEVNULL
    elif stdin_fd is not None and not os.isatty(stdin_fd):
        stdin = stdin_fd  # a file or a pipe: hand it over, EOF works by itself
    else:
        stdin = subprocess.PIPE  # an in-memory stream, or a terminal that must not become a pty
    proc = spawn(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env))
    try:
        if stdin is subprocess.PIPE and io.stdin is not None and proc.stdin is not None:
            threading.Thread(target=_feed, args=(io.stdin, proc.stdin), daemon=True).start()
        assert proc.stdout is not None and proc.stderr is not None
        _tty.pump(io, [_tty.FdChannel(proc.stdout.fileno(), _tty.STDOUT),
                       _tty.FdChannel(proc.stderr.fileno(), _tty.STDERR)], None)
        return _code(proc.wait())
    finally:
        _stop(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
