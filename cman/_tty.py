"""Terminal plumbing for foreground containers: raw mode, window size, stream pumping.

Backends that talk to an engine over a hijacked socket (Docker's attach and
exec) hand the socket to :func:`pump_socket`, which moves bytes both ways until
the remote side closes, demultiplexes Docker's 8-byte frame headers when there
is no tty, and forwards window-size changes (SIGWINCH).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import struct
import termios
import tty
from collections.abc import Callable, Iterator
from typing import IO

from .models import StdIO

ResizeFn = Callable[[int, int], None]
"""Called with (rows, cols)."""


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


def window_size(fd: int) -> tuple[int, int] | None:
    """(rows, cols) of the terminal on ``fd``, or None when it is not a terminal."""
    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None
    rows, cols, _, _ = struct.unpack("HHHH", packed)
    return (rows, cols) if rows and cols else None


@contextlib.contextmanager
def raw_terminal(stream: IO[bytes] | None) -> Iterator[None]:
    """Put the local terminal in raw mode so Ctrl-C, Ctrl-D reach the container's pty."""
    fd = fileno(stream)
    if fd is None or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # TCSAFLUSH would drop what the user typed early
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def forward_resize(io: StdIO, resize: ResizeFn | None) -> Iterator[None]:
    """Send the current window size now and on every SIGWINCH."""
    fd = fileno(io.stdout) if is_terminal(io.stdout) else fileno(io.stdin)
    if resize is None or fd is None or not os.isatty(fd):
        yield
        return

    def send(*_: object) -> None:
        size = window_size(fd)
        if size:
            with contextlib.suppress(Exception):
                resize(*size)

    send()
    previous = signal.signal(signal.SIGWINCH, send)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


class _Demux:
    """Splits Docker's multiplexed stream: [stream, 0, 0, 0, size:u32be] + payload."""

    def __init__(self, io: StdIO) -> None:
        self.io = io
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 8:
            kind, size = self.buf[0], struct.unpack(">I", self.buf[4:8])[0]
            if len(self.buf) < 8 + size:
                return
            payload, self.buf = self.buf[8 : 8 + size], self.buf[8 + size :]
            out = self.io.stderr if kind == 2 else self.io.stdout
            out.write(payload)
            out.flush()


def pump_socket(sock: socket.socket, io: StdIO, *, multiplexed: bool) -> None:
    """Copy local stdin -> sock and sock -> local stdout/stderr until sock closes.

    When stdin reaches EOF the socket's write half is shut down, so the remote
    process sees EOF too (docker's StdinOnce / exec stdin close). When the remote
    side stops taking input (over ssh, once the process has ended), the rest of
    stdin is dropped and its output is still read to the end.
    """
    sock.setblocking(True)
    demux = _Demux(io) if multiplexed else None
    in_fd = fileno(io.stdin)
    pending_in: bytes | None = None
    if io.stdin is not None and in_fd is None:
        pending_in = io.stdin.read()  # an in-memory stream: send it all at once
    stdin_open = io.stdin is not None
    if pending_in is not None:
        if pending_in:
            _send(sock, pending_in)
        _shutdown_write(sock)
        stdin_open = False
    sfd = sock.fileno()
    while True:
        watch = [sfd] + ([in_fd] if stdin_open and in_fd is not None else [])
        try:
            readable, _, _ = select.select(watch, [], [])
        except InterruptedError:
            continue
        if in_fd is not None and in_fd in readable:
            data = os.read(in_fd, 65536)
            if data:
                stdin_open = _send(sock, data)
            else:
                stdin_open = False
                _shutdown_write(sock)
        if sfd in readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return
            if demux is not None:
                demux.feed(data)
            else:
                io.stdout.write(data)
                io.stdout.flush()


def _send(sock: socket.socket, data: bytes) -> bool:
    """Send all of ``data``; False when the remote side no longer takes input."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def _shutdown_write(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
