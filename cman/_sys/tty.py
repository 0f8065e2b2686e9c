"""Terminal plumbing: raw mode, window size, and the one byte pump.

Every foreground session moves bytes the same way, whatever carries them: the
local stdin goes to the remote end, the remote end's output goes to the local
stdout and stderr, until the remote end is done. What differs is only the
carrier, so each engine supplies small adapters and :func:`pump` runs the loop:

- a :class:`Channel` is something to read output from (a hijacked Docker socket,
  with or without its 8-byte frame headers; an LXD exec websocket; the pty master
  or the pipes of an ``lxc-attach``);
- an :class:`Inbound` is where stdin goes (``send``), and how its end is told
  (``close``: a socket's write half shut down, LXD's empty text message, a pty's
  Ctrl-D).

Window changes arrive as SIGWINCH. The signal handler does nothing itself: the
signal wakes the pump's wait through :func:`signal.set_wakeup_fd`, and the pump,
the one writer of the session, sends the new size. So no frame is ever written from
inside a signal handler, between two halves of another write.

The pump waits with :mod:`selectors` (epoll on Linux), not ``select.select``, which
refuses descriptors above FD_SETSIZE (1024): a library process with many open files
would fail on its first foreground session.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import socket
import struct
import termios
import threading
import tty as _stdtty
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Protocol

ResizeFn = Callable[[int, int], None]
"""Called with (rows, cols)."""

STDOUT, STDERR = 1, 2
Chunk = tuple[int, bytes]
"""(STDOUT or STDERR, data)."""


class Streams(Protocol):
    """The caller's side of a session (:class:`cman.models.StdIO` is one)."""

    stdin: IO[bytes] | None
    stdout: IO[bytes]
    stderr: IO[bytes]
    tty: bool


def fileno(stream: IO[bytes] | None) -> int | None:
    if stream is None:
        return None
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def is_terminal(stream: IO[bytes] | None) -> bool:
    fd = fileno(stream)
    return fd is not None and os.isatty(fd)


def terminal_fd(streams: Streams) -> int | None:
    """The caller's terminal: stdout if it is one, else stdin, else None."""
    for stream in (streams.stdout, streams.stdin):
        fd = fileno(stream)
        if fd is not None and os.isatty(fd):
            return fd
    return None


def window_size(fd: int | None) -> tuple[int, int] | None:
    """(rows, cols) of the terminal on ``fd``, or None when it is not a terminal."""
    if fd is None:
        return None
    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None
    rows, cols, _, _ = struct.unpack("HHHH", packed)
    return (rows, cols) if rows and cols else None


def copy_window_size(src: int | None, dst: int) -> None:
    """Give the terminal ``dst`` (a pty we hold) the size of ``src``."""
    if src is None:
        return
    with contextlib.suppress(OSError):
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))


def is_raw(fd: int) -> bool:
    """Is the terminal on ``fd`` out of canonical (line) mode? True when it is not a terminal."""
    try:
        return not termios.tcgetattr(fd)[3] & termios.ICANON
    except termios.error:
        return True


@contextlib.contextmanager
def raw_terminal(stream: IO[bytes] | None) -> Iterator[None]:
    """Put the local terminal in raw mode so Ctrl-C and Ctrl-D reach the container's pty.

    TCSANOW, not TCSAFLUSH: what the user typed while the container started is kept.
    """
    fd = fileno(stream)
    if fd is None or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    _stdtty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# -- the pump ----------------------------------------------------------------------------------


class Channel(Protocol):
    """Output of the remote end."""

    def fileno(self) -> int: ...

    def pending(self) -> bool:
        """Data already read from the kernel that ``select`` cannot see (buffers, TLS records)."""
        ...

    def read(self) -> list[Chunk] | None:
        """What arrived ([] for nothing to show, e.g. a ping); None once the channel ended."""
        ...


class Inbound(Protocol):
    """Where the local stdin goes."""

    def send(self, data: bytes) -> bool:
        """Queue or send ``data``; False once the remote end takes no more input."""
        ...

    def close(self) -> None:
        """The local stdin ended: tell the remote end."""
        ...


class Tee:
    """A writable stream that also keeps the last ``limit`` bytes written (a job's output for ``logs``)."""

    def __init__(self, stream: IO[bytes], limit: int = 1 << 20) -> None:
        self.stream = stream
        self.limit = limit
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]
        return self.stream.write(chunk)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()


@contextlib.contextmanager
def _winch_wakeups(resize: ResizeFn | None) -> Iterator[int | None]:
    """A pipe that becomes readable on SIGWINCH (None when there is nothing to resize)."""
    if resize is None or threading.current_thread() is not threading.main_thread():
        yield None
        return
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    previous_handler = signal.signal(signal.SIGWINCH, lambda *_: None)
    previous_fd = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    try:
        yield rfd
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGWINCH, previous_handler)
        os.close(rfd)
        os.close(wfd)


def _drain_winch(fd: int) -> bool:
    """Read the wakeup bytes (signal numbers); True when a SIGWINCH was among them."""
    seen = False
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while data := os.read(fd, 512):
            seen = seen or signal.SIGWINCH in data
    return seen


class _Watch:
    """The descriptors the pump waits on, kept registered in one selector between waits.

    epoll refuses what cannot be polled (a regular file or /dev/null as stdin: EPERM);
    ``select`` called those always readable, and so does this.
    """

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.registered: set[int] = set()
        self.always: set[int] = set()

    def wait(self, fds: Sequence[int], timeout: float | None) -> set[int]:
        """The readable ones among ``fds`` (empty on timeout)."""
        wanted = set(fds)
        for fd in self.registered - wanted:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(fd)
        self.registered &= wanted
        self.always &= wanted
        for fd in wanted - self.registered - self.always:
            try:
                self.selector.register(fd, selectors.EVENT_READ)
                self.registered.add(fd)
            except PermissionError:
                self.always.add(fd)
        ready = set(self.always)
        try:
            events = self.selector.select(0 if ready else timeout)
        except InterruptedError:
            events = []
        return ready | {key.fd for key, _ in events}

    def __enter__(self) -> _Watch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.selector.close()


def pump(
    streams: Streams,
    channels: Sequence[Channel],
    inbound: Inbound | None,
    *,
    extras: Sequence[Channel] = (),
    resize: ResizeFn | None = None,
    input_ready: Callable[[], bool] | None = None,
    idle: Callable[[], bool] | None = None,
    poll: float | None = None,
) -> int:
    """Move bytes until every channel has ended; return how many output bytes arrived.

    - ``inbound`` gets the local stdin; an in-memory stdin (no file descriptor) is
      sent at once and closed. ``None``: the session takes no input.
    - ``extras`` are read too (to answer keep-alives) but nobody waits for them to end.
    - ``resize`` is called with the terminal's size now and after every SIGWINCH.
    - ``input_ready``: stdin is not read until it returns True (a pty that is not raw
      yet would swallow keys typed during boot).
    - ``idle`` is called when nothing arrived for ``poll`` seconds; False ends the pump.
    """
    in_fd = fileno(streams.stdin) if inbound is not None else None
    stdin_open = inbound is not None and streams.stdin is not None
    preload: bytes | None = None
    if inbound is not None:
        if streams.stdin is None:
            inbound.close()
        elif in_fd is None:  # an in-memory stream: all of it, then end-of-file, once input is taken
            preload = streams.stdin.read() or b""
            stdin_open = False
    open_channels = list(channels)
    quiet = list(extras)
    produced = 0
    outputs = {STDOUT: streams.stdout, STDERR: streams.stderr}
    term = terminal_fd(streams)
    with _winch_wakeups(resize) as winch, _Watch() as watch:
        if resize is not None:
            size = window_size(term)
            if size:
                resize(*size)
        while open_channels:
            if preload is not None and inbound is not None and (input_ready is None or input_ready()):
                if preload:
                    inbound.send(preload)
                inbound.close()
                preload = None
            watched = open_channels + quiet
            ready = [c for c in watched if c.pending()]
            if not ready:
                accepting = stdin_open and in_fd is not None and (input_ready is None or input_ready())
                fds = [c.fileno() for c in watched]
                if accepting:
                    assert in_fd is not None
                    fds.append(in_fd)
                if winch is not None:
                    fds.append(winch)
                waiting = idle is not None or (input_ready is not None and (preload is not None or stdin_open))
                timeout = poll if poll is not None and waiting else None
                readable = watch.wait(fds, timeout)
                if not readable:
                    if idle is not None and not idle():
                        break
                    continue
                if winch is not None and winch in readable and _drain_winch(winch) and resize is not None:
                    size = window_size(term)
                    if size:
                        with contextlib.suppress(OSError):
                            resize(*size)
                if accepting and in_fd in readable:
                    assert inbound is not None and in_fd is not None
                    data = os.read(in_fd, 65536)
                    if not data:
                        stdin_open = False
                        inbound.close()
                    elif not inbound.send(data):
                        stdin_open = False
                ready = [c for c in watched if c.fileno() in readable]
            for channel in ready:
                got = channel.read()
                if got is None:
                    if channel in open_channels:
                        open_channels.remove(channel)
                    else:
                        quiet.remove(channel)
                    continue
                if channel not in open_channels:
                    continue
                for stream, data in got:
                    produced += len(data)
                    out = outputs[stream]
                    out.write(data)
                    out.flush()
    return produced


# -- carriers that are plain sockets (Docker's attach and exec) ----------------------------------


class SocketChannel:
    """A hijacked stream socket; with ``multiplexed``, Docker's 8-byte frame headers are undone."""

    def __init__(self, sock: socket.socket, *, multiplexed: bool) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.multiplexed = multiplexed
        self.buf = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> bool:
        return False

    def read(self) -> list[Chunk] | None:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return None
        if not self.multiplexed:
            return [(STDOUT, data)]
        self.buf += data
        out: list[Chunk] = []
        while len(self.buf) >= 8:
            kind, size = self.buf[0], struct.unpack(">I", self.buf[4:8])[0]
            if len(self.buf) < 8 + size:
                break
            payload, self.buf = self.buf[8 : 8 + size], self.buf[8 + size :]
            out.append((STDERR if kind == 2 else STDOUT, payload))
        return out


class SocketInbound:
    """stdin into a socket; its end shuts the write half down, so the remote process sees EOF.

    When the remote side stops taking input (over ssh, once the process ended), the
    rest of stdin is dropped and its output is still read to the end.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)


class FdChannel:
    """A pipe or pty master to read output from (EIO from a pty master means the other side is gone)."""

    def __init__(self, fd: int, stream: int = STDOUT) -> None:
        self.fd = fd
        self.stream = stream

    def fileno(self) -> int:
        return self.fd

    def pending(self) -> bool:
        return False

    def read(self) -> list[Chunk] | None:
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            data = b""
        return [(self.stream, data)] if data else None


def pump_socket(sock: socket.socket, streams: Streams, *, multiplexed: bool, resize: ResizeFn | None = None) -> int:
    """One hijacked socket both ways (Docker's attach and exec), the terminal raw while it runs."""
    inbound = SocketInbound(sock) if streams.stdin is not None else None
    with raw_terminal(streams.stdin if streams.tty else None):
        return pump(streams, [SocketChannel(sock, multiplexed=multiplexed)], inbound, resize=resize)
