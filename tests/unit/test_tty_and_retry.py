"""Stream demultiplexing, socket pumping and the retry policy, without an engine."""

from __future__ import annotations

import io
import os
import resource
import socket
import struct
import threading
from pathlib import Path

import pytest

from cman._sys import retry as _retry
from cman._sys.tty import pump_socket
from cman.models import StdIO


def frame(kind: int, data: bytes) -> bytes:
    return bytes([kind, 0, 0, 0]) + struct.pack(">I", len(data)) + data


def test_pump_demultiplexes_and_sends_stdin() -> None:
    ours, theirs = socket.socketpair()
    received = bytearray()

    def remote() -> None:
        while chunk := theirs.recv(1024):  # until we shut our write side
            received.extend(chunk)
        payload = frame(1, b"out-1 ") + frame(2, b"err-1") + frame(1, b"out-2")
        for i in range(0, len(payload), 3):  # split frames across reads
            theirs.sendall(payload[i : i + 3])
        theirs.close()

    t = threading.Thread(target=remote)
    t.start()
    out, err = io.BytesIO(), io.BytesIO()
    pump_socket(ours, StdIO(io.BytesIO(b"typed input"), out, err), multiplexed=True)
    t.join(5)
    assert bytes(received) == b"typed input"
    assert out.getvalue() == b"out-1 out-2"
    assert err.getvalue() == b"err-1"


def test_pump_raw_stream_for_tty() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(frame(1, b"x"))  # with a tty nothing is demultiplexed
    theirs.close()
    out = io.BytesIO()
    pump_socket(ours, StdIO(None, out, io.BytesIO()), multiplexed=False)
    assert out.getvalue() == frame(1, b"x")


def test_retry_only_transient_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_retry.time, "sleep", lambda _s: None)
    calls: list[int] = []

    @_retry.idempotent(lambda e: isinstance(e, ConnectionResetError))
    def flaky(fail_times: int) -> str:
        calls.append(1)
        if len(calls) <= fail_times:
            raise ConnectionResetError("reset")
        return "ok"

    assert flaky(2) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(ConnectionResetError):
        flaky(99)
    assert len(calls) == _retry.ATTEMPTS
    calls.clear()

    @_retry.idempotent(lambda e: isinstance(e, ConnectionResetError))
    def broken() -> None:
        calls.append(1)
        raise ValueError("not transient")

    with pytest.raises(ValueError):
        broken()
    assert len(calls) == 1


def test_pump_takes_descriptors_above_fd_setsize(tmp_path: Path) -> None:
    """select() refuses descriptors >= 1024 (FD_SETSIZE); a busy library process has them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = 1500
    if hard != resource.RLIM_INFINITY and hard <= high:
        pytest.fail(f"this test needs RLIMIT_NOFILE above {high} (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, high + 16), hard))
    ours, theirs = socket.socketpair()
    moved = os.dup2(ours.fileno(), high)
    ours.close()
    sock = socket.socket(fileno=moved)
    stdin_file = tmp_path / "in"
    stdin_file.write_bytes(b"from a file")  # epoll cannot watch a regular file: read it as select did
    try:
        theirs.sendall(frame(1, b"hi") + frame(2, b"there"))
        received = bytearray()

        def remote() -> None:
            while chunk := theirs.recv(1024):
                received.extend(chunk)
            theirs.close()

        t = threading.Thread(target=remote)
        t.start()
        out, err = io.BytesIO(), io.BytesIO()
        with open(stdin_file, "rb") as stdin:
            pump_socket(sock, StdIO(stdin, out, err), multiplexed=True)
        t.join(5)
        assert (out.getvalue(), err.getvalue(), bytes(received)) == (b"hi", b"there", b"from a file")
    finally:
        sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
