"""A byte-for-byte proxy in front of the local Docker socket that records the request lines
it sees: what cman really sends to the daemon (paths, versions), on a unix socket or a
loopback TCP port. Hijacked streams (attach, exec) pass through untouched. Requests of the
docker CLI itself (``docker system dial-stdio`` on the far end of ssh pings the daemon on
every connection) are told apart by their User-Agent and left out."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from pathlib import Path

DOCKER_SOCKET = "/var/run/docker.sock"
_REQUEST = re.compile(rb"(?:^|\r\n)(GET|HEAD|POST|PUT|DELETE) (/\S*) HTTP/1\.[01]\r\n((?:[^\r\n]+\r\n)*)\r\n")
_DOCKER_CLI = re.compile(rb"^user-agent: *Docker-Client/", re.IGNORECASE | re.MULTILINE)
_KEEP = 1 << 20
"""Bytes of each connection's client side kept for the request lines (the heads come first)."""


class RecordingProxy:
    """Listens on ``unix_path`` or, without it, on 127.0.0.1:PORT (``port``)."""

    def __init__(self, unix_path: Path | None = None, upstream: str = DOCKER_SOCKET) -> None:
        self.upstream = upstream
        if unix_path is not None:
            self.server = socket.socket(socket.AF_UNIX)
            self.server.bind(str(unix_path))
            self.server.listen(64)
            self.address = f"unix://{unix_path}"
        else:
            self.server = socket.create_server(("127.0.0.1", 0))
            self.address = f"tcp://127.0.0.1:{self.server.getsockname()[1]}"
        self._seen: list[bytes] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def requests(self) -> list[tuple[str, str]]:
        """(method, path without query) of every request so far but the docker CLI's, in
        order of connection."""
        with self._lock:
            streams = list(self._seen)
        out = []
        for data in streams:
            for m in _REQUEST.finditer(data):
                if not _DOCKER_CLI.search(m.group(3)):
                    out.append((m.group(1).decode(), m.group(2).decode().partition("?")[0]))
        return out

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            try:
                upstream.connect(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._seen.append(b"")
                index = len(self._seen) - 1
            done = threading.Barrier(2, action=lambda c=client, u=upstream: (c.close(), u.close()))
            threading.Thread(target=self._copy, args=(client, upstream, index, done), daemon=True).start()
            threading.Thread(target=self._copy, args=(upstream, client, None, done), daemon=True).start()

    def _copy(self, src: socket.socket, dst: socket.socket, record: int | None, done: threading.Barrier) -> None:
        """Copy until ``src`` ends, then pass the EOF on. When ``dst`` stops taking data (the
        daemon hung up while stdin still flows), keep reading ``src`` and drop it: a unix socket
        closed with unread data resets its peer, which would lose the output still in flight.
        Both sockets are closed once both directions are done."""
        sink = False
        try:
            while data := src.recv(65536):
                if record is not None:
                    with self._lock:
                        if len(self._seen[record]) < _KEEP:
                            self._seen[record] += data
                if not sink:
                    try:
                        dst.sendall(data)
                    except OSError:
                        sink = True
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                done.wait()

    def close(self) -> None:
        self.server.close()
