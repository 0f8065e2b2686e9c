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
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

from .. import _tty
from ..errors import InvalidValue
from ..models import StdIO
from . import _lxc_fs, _proc

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


def attach_argv(lxcpath: str, name: str, command: Sequence[str], env: Mapping[str, str]) -> list[str]:
    if not command:
        raise InvalidValue("COMMAND", "", "give a command to run")
    argv = ["lxc-attach", "-P", lxcpath, "-n", name, "--clear-env"]
    for key, value in env.items():
        argv += ["--set-var", f"{key}={value}"]
    return [*argv, "--", *command]


def _code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def run_attached(argv: Sequence[str], io: StdIO, *, tty: bool, log: IO[bytes] | None = None) -> int:
    """Run ``argv`` (an lxc-attach command line) with ``io``; return the exit code.

    ``log`` receives the command's output as framed records (no-tty mode only).
    """
    for stream in (io.stdout, io.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if tty:
        return _run_on_pty(argv, io)
    return _run_piped(argv, io, log)


@contextlib.contextmanager
def _raw_keep_input(fd: int | None) -> Iterator[None]:
    """Raw mode on the local terminal WITHOUT discarding what was typed ahead
    (``tty.setraw`` and lxc-attach use TCSAFLUSH, which loses it); restored after."""
    if fd is None or not os.isatty(fd):
        yield
        return
    import termios
    import tty as ttymod

    saved = termios.tcgetattr(fd)
    ttymod.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _copy_winsize(src: int | None, dst: int) -> None:
    import fcntl
    import termios

    if src is None:
        return
    with contextlib.suppress(OSError):
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))


def _is_raw(fd: int) -> bool:
    import termios

    try:
        return not termios.tcgetattr(fd)[3] & termios.ICANON
    except termios.error:
        return True


def _run_on_pty(argv: Sequence[str], io: StdIO) -> int:
    """cman sits between the caller's streams and lxc-attach on a pty pair of its own.

    lxc-attach sees a terminal (so it gives the command a pty in the container, and
    forwards window sizes); cman forwards input only once lxc-attach has switched that
    pty to raw mode, so keys typed while the container boots are not flushed away, and
    passes window changes (SIGWINCH) on to the pty and to lxc-attach.
    """
    import pty
    import select
    import signal

    term_fd = next((fd for fd in (_tty.fileno(io.stdin), _tty.fileno(io.stdout)) if fd is not None and os.isatty(fd)),
                   None)
    master, slave = pty.openpty()
    _copy_winsize(term_fd, slave)
    try:
        # lxc-attach talks to its controlling terminal (/dev/tty), not to its stdin: give it
        # a session of its own whose controlling terminal is our pty (util-linux setsid -c).
        proc = spawn(["setsid", "--ctty", *argv], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    in_fd = _tty.fileno(io.stdin)
    pending = b""
    stdin_open = io.stdin is not None
    if io.stdin is not None and in_fd is None:  # an in-memory stream: all of it, then end-of-file
        pending = (io.stdin.read() or b"") + b"\x04"
        stdin_open = False
    slave_open = True
    ready_deadline = time.monotonic() + 10

    def on_winch(*_: object) -> None:
        _copy_winsize(term_fd, master)
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGWINCH)

    previous: Any = None
    with contextlib.suppress(ValueError):  # not the main thread: no resize forwarding
        previous = signal.signal(signal.SIGWINCH, on_winch)
    try:
        with _raw_keep_input(term_fd if in_fd == term_fd else None):
            while True:
                if slave_open and (_is_raw(slave) or time.monotonic() > ready_deadline):
                    os.close(slave)  # lxc-attach owns it now; EIO on master once it exits
                    slave_open = False
                ready = not slave_open
                watch = [master] + ([in_fd] if ready and stdin_open and in_fd is not None else [])
                try:
                    readable, writable, _ = select.select(
                        watch, [master] if ready and pending else [], [], 0.02 if not ready else 0.5
                    )
                except InterruptedError:
                    continue
                if in_fd is not None and in_fd in readable:
                    data = os.read(in_fd, 65536)
                    if data:
                        pending += data
                    else:
                        stdin_open = False
                        if not os.isatty(in_fd):
                            pending += b"\x04"
                if writable and pending:
                    try:
                        sent = os.write(master, pending[:4096])
                    except OSError:
                        sent = len(pending)
                    pending = pending[sent:]
                if master in readable:
                    try:
                        data = os.read(master, 65536)
                    except OSError:  # EIO: every holder of the slave side is gone
                        data = b""
                    if not data:
                        break
                    io.stdout.write(data)
                    io.stdout.flush()
                elif ready and proc.poll() is not None and not readable:
                    break
        return _code(proc.wait())
    finally:
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)
        _stop(proc)
        os.close(master)
        if slave_open:
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


def _run_piped(argv: Sequence[str], io: StdIO, log: IO[bytes] | None) -> int:
    import selectors

    stdin_fd = _tty.fileno(io.stdin)
    stdin: Any
    if io.stdin is None:
        stdin = subprocess.DEVNULL
    elif stdin_fd is not None and not os.isatty(stdin_fd):
        stdin = stdin_fd  # a file or a pipe: hand it over, EOF works by itself
    else:
        stdin = subprocess.PIPE  # an in-memory stream, or a terminal that must not become a pty
    proc = spawn(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if stdin is subprocess.PIPE and io.stdin is not None and proc.stdin is not None:
            threading.Thread(target=_feed, args=(io.stdin, proc.stdin), daemon=True).start()
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, (io.stdout, _lxc_fs.STDOUT))
        sel.register(proc.stderr, selectors.EVENT_READ, (io.stderr, _lxc_fs.STDERR))
        while sel.get_map():
            for key, _ in sel.select():
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                out, stream = key.data
                out.write(data)
                out.flush()
                _lxc_fs.append_frames(log, stream, data)
        sel.close()
        return _code(proc.wait())
    finally:
        _stop(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
