"""How the Docker backend reaches the Engine API: three transports, one interface.

- :class:`UnixTransport`: the local socket through the stdlib (``_sys.unixhttp``). Used
  when DOCKER_HOST is unset or ``unix://``: it keeps ``requests`` (imported by
  the docker SDK) off the path of every ``cman run`` and ``cman ps``.
- :class:`SshTransport`: the same stdlib client over ``ssh HOST docker system
  dial-stdio`` (one ssh per request, as the docker CLI does), for ssh:// hosts.
  The docker SDK's ssh transport needs paramiko even when it shells out to ssh,
  lets ssh's messages through onto the user's terminal, and gives a socket
  object whose fd is not the connection (select() and shutdown() miss it).
- :class:`SdkTransport`: the docker SDK's ``APIClient`` session, for tcp:// (with
  DOCKER_TLS_VERIFY / DOCKER_CERT_PATH), which the SDK handles.

All speak raw Engine API paths and raise the same three things: ApiError (an
HTTP status >= 400 with the daemon's message), OSError subclasses (the
connection failed), TimeoutError. :func:`.connection.boundary` maps those to
cman errors, once. :func:`.endpoint.open_transport` picks the transport.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from ..._sys import unixhttp as _http

if TYPE_CHECKING:
    import subprocess


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Stream(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...


class Transport(Protocol):
    endpoint: str

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = 60.0,
    ) -> Any:
        """One request; the decoded JSON answer (None when empty)."""

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

    def close(self) -> None: ...


class UnixTransport:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.endpoint = f"unix://{socket_path}"

    def _request(self, method: str, path: str, **kw: Any) -> _http.Response:
        try:
            return _http.request(self.socket_path, method, path, **kw)
        except _http.HTTPStatusError as err:
            raise ApiError(err.status, err.message) from err

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
             body: Any = None, timeout: float | None = 60.0) -> Any:
        return self._request(method, path, params=params, body=body, timeout=timeout).json()

    @contextlib.contextmanager
    def stream(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
               data: IO[bytes] | None = None, content_type: str = "application/json",
               timeout: float | None = None) -> Iterator[Stream]:
        resp = self._request(method, path, params=params, data=data, content_type=content_type, timeout=timeout)
        try:
            yield resp.body
        finally:
            resp.close()

    def hijack(self, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None) -> socket.socket:
        return self._request("POST", path, params=params, body=body, timeout=None, upgrade=True).sock

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
    """DOCKER_HOST=ssh://...: the stdlib client over ``ssh HOST docker system dial-stdio``."""

    def __init__(self, host: str) -> None:
        self.argv = ssh_argv(host)
        self.endpoint = host

    def _request(self, method: str, path: str, **kw: Any) -> _http.Response:
        dialed: list[_SshSocket] = []

        def dial() -> socket.socket:
            dialed.append(_SshSocket.spawn(self.argv))
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


class SdkTransport:
    """tcp:// daemons through docker-py's APIClient (a requests Session)."""

    def __init__(self) -> None:
        import docker

        kwargs = docker.utils.kwargs_from_env()
        host = str(kwargs.get("base_url") or os.environ.get("DOCKER_HOST", ""))
        self.endpoint = host
        try:
            self.api = docker.APIClient(
                version=os.environ.get("DOCKER_API_VERSION", "auto"),
                timeout=120,
                **kwargs,
            )
        except docker.errors.DockerException as err:
            raise ConnectionRefusedError(f"cannot reach {host}: {err}") from err

    def _url(self, path: str) -> str:
        return f"{self.api.base_url}/v{self.api.api_version}{path}"

    def _send(self, method: str, path: str, *, stream: bool, timeout: float | None, **kw: Any) -> Any:
        import requests.exceptions

        try:
            resp = self.api.request(method, self._url(path), stream=stream, timeout=timeout, **kw)
        except requests.exceptions.Timeout as err:
            raise TimeoutError(str(err)) from err
        except requests.exceptions.ConnectionError as err:
            raise ConnectionRefusedError(str(err)) from err
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, _http.HTTPStatusError(resp.status_code, resp.content).message)
        return resp

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
             body: Any = None, timeout: float | None = 60.0) -> Any:
        resp = self._send(method, path, stream=False, timeout=timeout, params=_bools(params), json=body)
        return resp.json() if resp.content.strip() else None

    @contextlib.contextmanager
    def stream(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
               data: IO[bytes] | None = None, content_type: str = "application/json",
               timeout: float | None = None) -> Iterator[Stream]:
        resp = self._send(method, path, stream=True, timeout=timeout, params=_bools(params), data=data,
                          headers={"Content-Type": content_type})
        try:
            yield resp.raw
        finally:
            resp.close()

    def hijack(self, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None) -> socket.socket:
        resp = self._send("POST", path, stream=True, timeout=None, params=_bools(params), json=body,
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
