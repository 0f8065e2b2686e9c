"""A minimal HTTP/1.1 client over a unix socket, for read-only hot paths.

``cman ps`` must start fast; the docker SDK and pylxd pull in ``requests``,
which costs more than the whole listing. Read-only GETs that the CLI runs on
every invocation go through this stdlib client; everything else uses the SDKs.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlencode


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class HTTPStatusError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


def get_json(socket_path: str, path: str, params: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    """GET ``path`` and decode JSON. Raises OSError (connect) or HTTPStatusError."""
    conn = UnixHTTPConnection(socket_path, timeout=timeout)
    try:
        url = path + ("?" + urlencode(params) if params else "")
        conn.request("GET", url, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status >= 400:
            raise HTTPStatusError(resp.status, body)
        return json.loads(body)
    finally:
        conn.close()
