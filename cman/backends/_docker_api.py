"""How the Docker backend reaches the Engine API: two transports, one interface.

- :class:`UnixTransport`: the local socket through the stdlib (``_http``). Used
  when DOCKER_HOST is unset or ``unix://``: it keeps ``requests`` (imported by
  the docker SDK) off the path of every ``cman run`` and ``cman ps``.
- :class:`SdkTransport`: the docker SDK's ``APIClient`` session, for tcp:// (with
  DOCKER_TLS_VERIFY / DOCKER_CERT_PATH) and ssh:// hosts, which the SDK handles.

Both speak raw Engine API paths and raise the same three things: ApiError (an
HTTP status >= 400 with the daemon's message), OSError subclasses (the
connection failed), TimeoutError. The backend maps those to cman errors once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import IO, Any, Protocol

from . import _http


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

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
             body: Any = None, timeout: float | None = 60.0) -> Any:
        try:
            return _http.request(self.socket_path, method, path, params=params, body=body, timeout=timeout).json()
        except _http.HTTPStatusError as err:
            raise ApiError(err.status, err.message) from err

    @contextlib.contextmanager
    def stream(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
               data: IO[bytes] | None = None, content_type: str = "application/json",
               timeout: float | None = None) -> Iterator[Stream]:
        try:
            resp = _http.request(self.socket_path, method, path, params=params, data=data,
                                 content_type=content_type, timeout=timeout)
        except _http.HTTPStatusError as err:
            raise ApiError(err.status, err.message) from err
        try:
            yield resp.body
        finally:
            resp.close()

    def hijack(self, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None) -> socket.socket:
        try:
            resp = _http.request(self.socket_path, "POST", path, params=params, body=body, timeout=None, upgrade=True)
        except _http.HTTPStatusError as err:
            raise ApiError(err.status, err.message) from err
        return resp.sock

    def close(self) -> None:
        pass


class SdkTransport:
    """Remote daemons through docker-py's APIClient (a requests Session)."""

    def __init__(self) -> None:
        import docker

        kwargs = docker.utils.kwargs_from_env()
        host = str(kwargs.get("base_url") or os.environ.get("DOCKER_HOST", ""))
        self.endpoint = host
        try:
            self.api = docker.APIClient(
                version=os.environ.get("DOCKER_API_VERSION", "auto"),
                use_ssh_client=host.startswith("ssh://"),
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
