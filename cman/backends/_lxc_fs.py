"""Files of the raw LXC backend: locks, atomic JSON, and the framed output log.

Everything here is plain filesystem work; no lxc-* tool is called.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

from ..errors import EngineTimeout

LOCK_TIMEOUT = 300.0
"""Seconds to wait for another cman process to release a lock."""

STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxI")
"""A log record: stream (1 = stdout, 2 = stderr), 3 zero bytes, payload size (u32 big-endian).
The same framing as Docker's multiplexed streams, so order and stream survive in one file."""


@contextlib.contextmanager
def locked(path: Path, *, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created when missing).

    flock locks belong to the open file, so they are released when the process
    dies: a killed cman never leaves a stale lock behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EngineTimeout(
                        f"another cman process has held {path} for more than {timeout:g} s",
                        hint="wait for it to finish, or find it with `fuser " + str(path) + "`",
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def update_json(path: Path, lock: Path, **changes: Any) -> dict[str, Any]:
    """Read-modify-write ``path`` under ``lock``; returns the new content."""
    with locked(lock, timeout=30):
        data = read_json(path) or {}
        data.update(changes)
        write_json(path, data)
        return data


# -- framed output log --------------------------------------------------------------------


def frame(stream: int, data: bytes) -> bytes:
    return _HEADER.pack(stream, len(data)) + data


class FrameReader:
    """Incremental reader of a framed log; keeps a partial record for the next read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.buf = b""

    def read(self) -> list[tuple[Literal["stdout", "stderr"], bytes]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        self.buf += data
        out: list[tuple[Literal["stdout", "stderr"], bytes]] = []
        while len(self.buf) >= _HEADER.size:
            stream, size = _HEADER.unpack_from(self.buf)
            if len(self.buf) < _HEADER.size + size:
                break
            payload = self.buf[_HEADER.size : _HEADER.size + size]
            self.buf = self.buf[_HEADER.size + size :]
            out.append(("stderr" if stream == STDERR else "stdout", payload))
        return out


class TailReader:
    """Incremental reader of a plain file (the console log)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:  # truncated (a new boot): start over
                    self.offset = 0
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return b""
        self.offset += len(data)
        return data


def append_frames(log: IO[bytes] | None, stream: int, data: bytes) -> None:
    if log is not None and data:
        log.write(frame(stream, data))
        log.flush()
