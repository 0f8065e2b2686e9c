"""A minimal HTTP client over a unix socket, for engines on the local machine.

Docker's and LXD's Go servers speak plain HTTP on their unix sockets. The docker
SDK and pylxd reach them through ``requests``, whose import alone costs more
than a whole ``docker run`` of a small container on these machines; even the
stdlib's ``http.client`` costs ~25 ms (the email parser). Requests here are
HTTP/1.0 (the server closes the connection after the answer, so there is no
chunked encoding to undo), or HTTP/1.1 with ``Upgrade: tcp`` for the hijacked
streams of attach and exec. One connection per request: a unix connect is
~50 us. Instead of a socket path, a request can take a :data:`Dialer` that
returns a connected stream socket (Docker over ssh: one end of a socketpair).

Only the answer a client asked for is an answer: a redirect (Go's server answers a
path with ``..`` segments with 301 to the cleaned path) or a missing status line is an
:class:`HTTPStatusError`, and an empty or non-JSON body where a JSON document is
expected a :class:`BadResponse`, never a ``None`` that a caller would read as a record.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from typing import IO, Any, cast
from urllib.parse import quote

Dialer = Callable[[], socket.socket]
"""Returns a new connected stream socket to the server (one per request)."""


class HTTPStatusError(Exception):
    """The server answered with a status other than success: >= 400, a redirect (3xx), or
    no HTTP answer at all (status 0)."""

    def __init__(self, status: int, body: bytes, reason: str | None = None) -> None:
        self.status = status
        self.body = body
        self.reason = reason
        super().__init__(f"HTTP {status}: {self.message}")

    @property
    def message(self) -> str:
        if self.reason is not None:
            return self.reason
        try:
            data = json.loads(self.body)
        except ValueError:
            return self.body.decode(errors="replace").strip()[:500]
        if isinstance(data, dict):
            return str(data.get("message") or data.get("error") or data)
        return str(data)


class BadResponse(HTTPStatusError, ValueError):
    """The server answered with success, but the body is not the JSON document asked for
    (empty, not JSON, or of another kind). Also a ValueError: what a parse failure was."""


def status_error(status: int, headers: Mapping[str, str], body: bytes) -> HTTPStatusError:
    """The error for an answer whose status is not success (``headers`` with lowercase keys)."""
    if 300 <= status < 400:
        where = headers.get("location")
        return HTTPStatusError(status, body, f"unexpected redirect{f' to {where}' if where else ''}")
    return HTTPStatusError(status, body)


def decode_json(data: bytes, kind: type | None = None, status: int = 200) -> Any:
    """A JSON document from a success body; ``kind`` (dict, list) is the type it must have.

    Raises :class:`BadResponse` for an empty body, invalid JSON, or a document of another kind.
    """
    if not data.strip():
        raise BadResponse(status, data, "empty answer where a JSON document was expected")
    try:
        doc = json.loads(data)
    except ValueError:
        raise BadResponse(status, data, f"answer is not JSON: {data[:80]!r}") from None
    if kind is not None and not isinstance(doc, kind):
        raise BadResponse(status, data, f"expected a JSON {_kind_name(kind)}, got {type(doc).__name__}")
    return doc


def _kind_name(kind: type) -> str:
    names: dict[type, str] = {dict: "object", list: "array"}
    return names.get(kind, kind.__name__)


def query(params: Mapping[str, Any] | None) -> str:
    if not params:
        return ""
    items = [(k, v) for k, v in params.items() if v is not None]
    if not items:
        return ""
    return "?" + "&".join(f"{quote(str(k))}={quote(_param(v), safe='')}" for k, v in items)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


class Response:
    """Status, headers and a readable body stream of one request."""

    def __init__(self, sock: socket.socket, status: int, headers: dict[str, str], body: IO[bytes]) -> None:
        self.sock = sock
        self.status = status
        self.headers = headers
        self.body = body

    def read_all(self) -> bytes:
        try:
            return self.body.read()
        finally:
            self.close()

    def json(self, kind: type | None = None) -> Any:
        """The decoded body; None when it is empty, unless ``kind`` (dict, list) says what it
        must be: then anything else is a :class:`BadResponse`."""
        data = self.read_all()
        if kind is None and not data.strip():
            return None
        return decode_json(data, kind, self.status)

    def close(self) -> None:
        try:
            self.body.close()
        finally:
            self.sock.close()


def request(
    socket_path: str | Dialer,
    method: str,
    path: str,
    *,
    params: Mapping[str, Any] | None = None,
    body: Any = None,
    data: IO[bytes] | None = None,
    content_type: str = "application/json",
    timeout: float | None = 60.0,
    upgrade: bool = False,
) -> Response:
    """Send one request; raise HTTPStatusError unless it succeeded (2xx, or 101 for an
    upgrade), OSError when the socket fails.

    ``body`` is sent as JSON; ``data`` (a binary file) is streamed as is.
    With ``upgrade`` the connection is hijacked: the returned response's ``sock``
    is the raw stream (attach / exec).
    """
    if not path.startswith("/") or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in path):
        raise ValueError(f"not a request path: {path!r}")  # callers quote what they put in a path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) if isinstance(socket_path, str) else socket_path()
    sock.settimeout(timeout)
    try:
        if isinstance(socket_path, str):
            sock.connect(socket_path)
        payload = json.dumps(body).encode() if body is not None else b""
        length = len(payload)
        if data is not None:
            length = os.fstat(data.fileno()).st_size
        version = "HTTP/1.1" if upgrade else "HTTP/1.0"
        head = [f"{method} {path}{query(params)} {version}", "Host: localhost", "Accept: application/json"]
        if upgrade:
            head += ["Connection: Upgrade", "Upgrade: tcp"]
        if body is not None or data is not None or method in ("POST", "PUT"):
            head += [f"Content-Type: {content_type}", f"Content-Length: {length}"]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if data is not None:
            sock.sendfile(data)
        elif payload:
            sock.sendall(payload)
        # Unbuffered for a hijacked stream, so no byte of it is kept back in a buffer.
        stream = sock.makefile("rb", buffering=0 if upgrade else -1)
        first = stream.readline()
        if not first:  # closed before a byte of an answer: a daemon going away, not a bad answer
            raise ConnectionResetError("the server closed the connection without answering")
        status_line = first.decode("latin-1").split()
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isascii() and status_line[1].isdigit() else 0
        headers: dict[str, str] = {}
        while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        response = Response(sock, status, headers, cast(IO[bytes], stream))
    except BaseException:
        sock.close()
        raise
    if not (200 <= status < 300 or (upgrade and status == 101)):
        raise status_error(status, headers, response.read_all())
    return response


def get_json(socket_path: str, path: str, params: dict[str, Any] | None = None, timeout: float = 10.0,
             kind: type | None = None) -> Any:
    """GET ``path`` and decode its JSON body; an empty or non-JSON body is a :class:`BadResponse`."""
    return decode_json(request(socket_path, "GET", path, params=params, timeout=timeout).read_all(), kind)


def connects(path: str, timeout: float = 1.0) -> bool:
    """Does something accept connections on the unix socket ``path``? (a cheap liveness check)"""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()
