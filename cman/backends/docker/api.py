"""How the Docker backend reaches the Engine API: three transports, one interface.

- :class:`UnixTransport`: the local socket through the stdlib (``_sys.unixhttp``). Used
  when DOCKER_HOST is unset or ``unix://``: it keeps ``requests`` (imported by
  the docker SDK) off the path of every ``cman run`` and ``cman ps``.
- :class:`SshTransport`: for ssh:// hosts, ``ssh HOST docker system dial-stdio`` kept
  open: ONE ssh stream per transport (per cman process) carries every request with
  HTTP/1.1 keep-alive (``http.client``, whose import is paid only on this path); only a
  hijacked stream (attach, exec) and a request made while that stream is busy dial
  another ssh. An ssh costs a process and a handshake (~0.1 s here), a request ~1 ms.
  The docker SDK's ssh transport needs paramiko even when it shells out to ssh,
  lets ssh's messages through onto the user's terminal, and gives a socket
  object whose fd is not the connection (select() and shutdown() miss it).
- :class:`SdkTransport`: the docker SDK's ``APIClient`` session, for tcp:// (with
  DOCKER_TLS_VERIFY / DOCKER_CERT_PATH), which the SDK handles.

All take the same Engine API paths (``/containers/json``) and send them versioned
(``/v1.41/containers/json``), with the version chosen as the docker CLI chooses it
(:class:`_Versioned`): DOCKER_API_VERSION when set, else negotiated once per transport
with ``GET /_ping``: the lower of the daemon's ``API-Version`` and :data:`CLIENT_API_VERSION`.
They raise the same three things: ApiError (the daemon's status and message, also for an
answer that is not the one asked for: a redirect, a body that is not the expected JSON
document), OSError subclasses (the connection failed), TimeoutError.
:func:`.connection.boundary` maps those to cman errors, once.
:func:`.endpoint.open_transport` picks the transport.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from ..._sys import unixhttp as _http
from ...errors import EngineUnavailable, InvalidValue
from .keepalive import KeptResponse, SshConnection, unanswered

if TYPE_CHECKING:
    import subprocess

CLIENT_API_VERSION = "1.52"
"""The newest Engine API version cman speaks. Docker 20.10 (1.41) is what runs here; every
change from 1.42 to 1.52 in moby's api/docs/CHANGELOG.md was read against the fields cman
sends and reads. The one that touches cman: 1.48 deprecates ``error`` in the progress
streams of pull and import for ``errorDetail`` (both are read, :mod:`.images`). Docker 29
refuses versions below 1.44, so a client pinned to 1.41 would not reach it."""
MIN_API_VERSION = "1.30"
"""``POST /containers/ID/wait?condition=`` (the foreground ``--rm`` wait) came with 1.30."""
FALLBACK_API_VERSION = "1.24"
"""What a daemon speaks whose ``/_ping`` has no ``API-Version`` header (the docker CLI's rule)."""
PING_TIMEOUT = 30.0


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _version_key(text: str) -> tuple[int, int] | None:
    major, dot, minor = text.partition(".")
    if not (dot and major.isdigit() and minor.isdigit() and len(text) <= 12):
        return None
    return int(major), int(minor)


def fixed_version() -> str | None:
    """DOCKER_API_VERSION (no negotiation then, as for the docker CLI); None when unset or empty."""
    text = os.environ.get("DOCKER_API_VERSION", "").strip()
    if not text:
        return None
    key = _version_key(text)
    if key is None:
        raise InvalidValue("DOCKER_API_VERSION", text, "expected MAJOR.MINOR, e.g. 1.41")
    if key < _key(MIN_API_VERSION):
        raise InvalidValue("DOCKER_API_VERSION", text, f"cman needs Engine API {MIN_API_VERSION} or newer")
    return text


def negotiate(server: str | None, endpoint: str = "docker") -> str:
    """The version to speak with a daemon whose ``/_ping`` said ``server`` (None: no header)."""
    key = _version_key(server or FALLBACK_API_VERSION)
    if key is None:
        raise ApiError(200, f"the daemon sent an invalid API-Version header {server!r}")
    if key < _key(MIN_API_VERSION):
        raise EngineUnavailable("docker", f"the daemon at {endpoint} speaks Engine API {server or FALLBACK_API_VERSION}, "
                                f"cman needs {MIN_API_VERSION} or newer", "upgrade Docker (17.06 or newer)")
    return CLIENT_API_VERSION if key >= _key(CLIENT_API_VERSION) else f"{key[0]}.{key[1]}"


def _key(version: str) -> tuple[int, int]:
    key = _version_key(version)
    assert key is not None
    return key


class _Versioned:
    """The API version of one transport: chosen on its first request, then kept."""

    endpoint: str
    _version: str | None = None
    ping_timeout: float = PING_TIMEOUT

    def _ping(self) -> str | None:
        """``GET /_ping`` (unversioned); the daemon's ``API-Version`` header."""
        raise NotImplementedError

    def api_version(self) -> str:
        if self._version is None:
            self._version = fixed_version() or negotiate(self._ping(), self.endpoint)
        return self._version

    def _path(self, path: str) -> str:
        return f"/v{self.api_version()}{path}"


class Stream(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...


class Transport(Protocol):
    endpoint: str
    ping_timeout: float

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = 60.0,
        kind: type | None = None,
    ) -> Any:
        """One request; the decoded JSON answer: of type ``kind`` when given (else ApiError),
        None for an empty answer when no ``kind`` is asked for."""

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: IO[bytes] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> AbstractContextManager[Stream]:
        """A context-managed readable body (pull progress, logs, import)."""

    def hijack(self, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None) -> socket.socket:
        """POST and take over the connection (attach, exec start)."""

    def api_version(self) -> str:
        """The Engine API version this transport speaks (negotiated on first use)."""

    def close(self) -> None: ...


class UnixTransport(_Versioned):
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.endpoint = f"unix://{socket_path}"

    def _request(self, method: str, path: str, **kw: Any) -> _http.Response:
        """One request on the path as given (unversioned)."""
        try:
            return _http.request(self.socket_path, method, path, **kw)
        except _http.HTTPStatusError as err:
            raise ApiError(err.status, err.message) from err

    def _ping(self) -> str | None:
        resp = self._request("GET", "/_ping", timeout=self.ping_timeout)
        resp.read_all()
        return resp.headers.get("api-version")

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
             body: Any = None, timeout: float | None = 60.0, kind: type | None = None) -> Any:
        resp = self._request(method, self._path(path), params=params, body=body, timeout=timeout)
        try:
            return resp.json(kind)
        except _http.BadResponse as err:
            raise ApiError(err.status, err.message) from err

    @contextlib.contextmanager
    def stream(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
               data: IO[bytes] | None = None, content_type: str = "application/json",
               timeout: float | None = None) -> Iterator[Stream]:
        resp = self._request(method, self._path(path), params=params, data=data, content_type=content_type,
                             timeout=timeout)
        try:
            yield resp.body
        finally:
            resp.close()

    def hijack(self, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None) -> socket.socket:
        return self._request("POST", self._path(path), params=params, body=body, timeout=None, upgrade=True).sock

    def close(self) -> None:
        pass


SSH_CONNECT_TIMEOUT = 10
"""Seconds for ssh's TCP connect and handshake (its ConnectTimeout)."""


def ssh_argv(host: str) -> list[str]:
    """The ssh command that connects to the Engine API of DOCKER_HOST=ssh://[user@]host[:port].

    BatchMode: never a password or host-key prompt (there is one ssh per request);
    keys come from the ssh config or the agent. Everything else comes from the
    user's ssh config, as for the docker CLI.
    """
    try:
        url = urlsplit(host)
        port = url.port
    except ValueError as err:
        raise ConnectionError(f"invalid DOCKER_HOST {host}: {err}") from None
    if url.scheme != "ssh" or not url.hostname or url.path not in ("", "/") or url.query or url.password:
        raise ConnectionError(f"invalid DOCKER_HOST {host}: expected ssh://[user@]host[:port]")
    argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}"]
    if url.username:
        argv += ["-l", url.username]
    if port is not None:
        argv += ["-p", str(port)]
    return [*argv, "--", url.hostname, "docker", "system", "dial-stdio"]


class _SshSocket(socket.socket):
    """Our end of a socketpair whose other end is ssh's stdin and stdout.

    A real socket: select(), recv() and shutdown(SHUT_WR) (ssh passes the EOF on
    to the daemon) work as on the local socket. ssh's stderr goes to a temp file
    and into the error when the connection fails. Closing the socket ends ssh.
    """

    proc: subprocess.Popen[bytes]
    errors: IO[bytes]
    said: str | None = None

    @classmethod
    def spawn(cls, argv: list[str]) -> _SshSocket:
        import subprocess  # ssh only: kept off the local socket's start-up path
        import tempfile

        ours, theirs = socket.socketpair()
        sock = cls(fileno=ours.detach())
        sock.errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the socket)
        try:
            # Own session: no controlling terminal to prompt on, and the terminal's
            # Ctrl-C goes to cman (which may still have requests to make), not to ssh.
            sock.proc = subprocess.Popen(argv, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=sock.errors,
                                         start_new_session=True)
        except OSError as err:
            sock.errors.close()
            super(_SshSocket, sock).close()
            raise ConnectionError(f"cannot run {argv[0]}: {err.strerror or err}") from err
        finally:
            theirs.close()
        return sock

    def close(self) -> None:
        import subprocess

        super().close()
        if self.errors.closed:
            return
        try:
            code = self.proc.wait(0.5)  # it ends by itself once the daemon has closed the connection
        except subprocess.TimeoutExpired:
            self.proc.terminate()  # ended by us: nothing of ssh's to report
            self.proc.wait()
        else:
            self.errors.seek(0)
            lines = self.errors.read().decode(errors="replace").splitlines()
            said = "; ".join(line.strip() for line in lines if line.strip())[:400]
            self.said = said or (f"ssh exited with status {code}" if code else None)
        finally:
            self.errors.close()

    def failure(self) -> str | None:
        """Ends ssh (see close); what it said if it ended with a message or an error status, else None."""
        self.close()
        return self.said


class SshTransport(UnixTransport):
    """DOCKER_HOST=ssh://...: HTTP/1.1 over one kept ``ssh HOST docker system dial-stdio``.

    The idle connection waits in ``_idle``; a request takes it (or dials when there is
    none), and its response gives it back once read to the end, unless the daemon said it
    closes it. A response closed early, an error or a timeout end that ssh instead. A
    request on a kept connection that the far end has meanwhile closed (nothing of it was
    answered) is sent again once on a new one. Thread-safe: concurrent requests each get
    a connection.
    """

    def __init__(self, host: str) -> None:
        self.argv = ssh_argv(host)
        self.endpoint = host
        self._idle: SshConnection | None = None
        self._lock = threading.Lock()
        self.dialed = 0
        """How many ssh processes this transport started (tests and benchmarks count them)."""

    def _dial(self) -> _SshSocket:
        self.dialed += 1
        return _SshSocket.spawn(self.argv)

    def _take(self) -> tuple[SshConnection, bool]:
        with self._lock:
            conn, self._idle = self._idle, None
        if conn is not None:
            return conn, True
        return SshConnection(self._dial), False

    def _give_back(self, conn: SshConnection, reusable: bool) -> None:
        with self._lock:
            if reusable and self._idle is None:
                self._idle = conn
                return
        conn.end()

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        """As :func:`cman._sys.unixhttp.request` (same keywords), on the kept connection."""
        if kw.get("upgrade"):  # the stream becomes the container's: an ssh of its own
            return self._request_own_ssh(method, path, **kw)
        return self._kept_request(method, path, **kw)

    def _kept_request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None,
                      data: IO[bytes] | None = None, content_type: str = "application/json",
                      timeout: float | None = 60.0) -> KeptResponse:
        if not path.startswith("/") or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in path):
            raise ValueError(f"not a request path: {path!r}")  # callers quote what they put in a path
        import http.client

        headers = {"Accept": "application/json"}
        payload: bytes | IO[bytes] | None = None
        if data is not None:
            payload = data
            headers.update({"Content-Type": content_type, "Content-Length": str(os.fstat(data.fileno()).st_size)})
        elif body is not None or method in ("POST", "PUT"):
            payload = json.dumps(body).encode() if body is not None else b""
            headers.update({"Content-Type": content_type, "Content-Length": str(len(payload))})
        while True:
            conn, kept = self._take()
            try:
                resp = conn.send(method, path + _http.query(params), payload, headers, timeout)
            except (OSError, http.client.HTTPException) as err:
                said = conn.end()
                if kept and data is None and unanswered(err):
                    continue  # the far end closed the idle connection: a new one, once
                if isinstance(err, TimeoutError):
                    raise
                raise ConnectionError(said or str(err) or "the ssh connection closed without an answer") from err
            except BaseException:
                conn.end()
                raise
            kept_response = KeptResponse(resp, functools.partial(self._give_back, conn))
            if not 200 <= resp.status < 300:
                raise ApiError(resp.status, _http.status_error(resp.status, kept_response.headers,
                                                               kept_response.read_all()).message)
            return kept_response

    def _request_own_ssh(self, method: str, path: str, **kw: Any) -> _http.Response:
        """One request on an ssh of its own (hijacked streams)."""
        dialed: list[_SshSocket] = []

        def dial() -> socket.socket:
            dialed.append(self._dial())
            return dialed[-1]

        try:
            return _http.request(dial, method, path, **kw)
        except _http.HTTPStatusError as err:
            if err.status != 0 or not dialed:
                raise ApiError(err.status, err.message) from err
            # No HTTP answer at all: ssh or the remote `docker system dial-stdio` failed.
            raise ConnectionError(dialed[0].failure() or "the ssh connection closed without an answer") from err
        except OSError as err:
            said = dialed[0].failure() if dialed else None
            if said is None:
                raise
            raise ConnectionError(said) from err

    def close(self) -> None:
        with self._lock:
            conn, self._idle = self._idle, None
        if conn is not None:
            conn.end(done=True)


class SdkTransport(_Versioned):
    """tcp:// daemons through docker-py's APIClient (a requests Session).

    The client is made with a fixed version, so docker-py asks the daemon nothing (its
    "auto" would take the daemon's newest version as is); the version in each path is
    this transport's, chosen as on the other transports.
    """

    def __init__(self, environment: Mapping[str, str] | None = None) -> None:
        import docker

        env = dict(os.environ if environment is None else environment)
        kwargs = docker.utils.kwargs_from_env(environment=env)
        host = str(kwargs.get("base_url") or env.get("DOCKER_HOST", ""))
        self.endpoint = host
        try:
            self.api = docker.APIClient(version=fixed_version() or CLIENT_API_VERSION, timeout=120, **kwargs)
        except docker.errors.DockerException as err:
            raise ConnectionRefusedError(f"cannot reach {host}: {err}") from err

    def _send(self, method: str, url: str, *, stream: bool, timeout: float | None, **kw: Any) -> Any:
        import requests.exceptions

        try:
            resp = self.api.request(method, url, stream=stream, timeout=timeout, allow_redirects=False, **kw)
        except requests.exceptions.Timeout as err:
            raise TimeoutError(str(err)) from err
        except requests.exceptions.ConnectionError as err:
            raise ConnectionRefusedError(str(err)) from err
        if not 200 <= resp.status_code < 300 and resp.status_code != 101:
            wrong = _http.status_error(resp.status_code, {k.lower(): v for k, v in resp.headers.items()},
                                       resp.content)
            raise ApiError(resp.status_code, wrong.message)
        return resp

    def _ping(self) -> str | None:
        resp = self._send("GET", f"{self.api.base_url}/_ping", stream=False, timeout=self.ping_timeout)
        version = resp.headers.get("API-Version")
        return str(version) if version else None

    def _url(self, path: str) -> str:
        return f"{self.api.base_url}{self._path(path)}"

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
             body: Any = None, timeout: float | None = 60.0, kind: type | None = None) -> Any:
        resp = self._send(method, self._url(path), stream=False, timeout=timeout, params=_bools(params), json=body)
        if kind is None and not resp.content.strip():
            return None
        try:
            return _http.decode_json(resp.content, kind, resp.status_code)
        except _http.BadResponse as err:
            raise ApiError(err.status, err.message) from err

    @contextlib.contextmanager
    def stream(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
               data: IO[bytes] | None = None, content_type: str = "application/json",
               timeout: float | None = None) -> Iterator[Stream]:
        resp = self._send(method, self._url(path), stream=True, timeout=timeout, params=_bools(params), data=data,
                          headers={"Content-Type": content_type})
        try:
            yield resp.raw
        finally:
            resp.close()

    def hijack(self, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None) -> socket.socket:
        resp = self._send("POST", self._url(path), stream=True, timeout=None, params=_bools(params), json=body,
                          headers={"Connection": "Upgrade", "Upgrade": "tcp"})
        raw = self.api._get_raw_response_socket(resp)
        sock = getattr(raw, "_sock", raw)
        sock = getattr(sock, "_sock", sock) if not isinstance(sock, socket.socket) else sock
        if not isinstance(sock, socket.socket):
            raise ApiError(500, "this DOCKER_HOST transport cannot give a raw stream for attach/exec")
        return sock

    def close(self) -> None:
        self.api.close()


def _bools(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    out: dict[str, Any] = {}
    for k, v in params.items():
        if v is None:
            continue
        out[k] = int(v) if isinstance(v, bool) else json.dumps(v) if isinstance(v, (dict, list)) else v
    return out
