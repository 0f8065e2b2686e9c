"""HTTP/1.1 keep-alive over one ``ssh HOST docker system dial-stdio`` (:class:`.api.SshTransport`).

``http.client`` does the HTTP (lengths, chunks, keep-alive); it is imported on first use,
so only ssh:// hosts pay its import. :class:`SshConnection` is one connection on one ssh
process; :class:`KeptResponse` gives it back to the transport when its body was read to
the end, with the interface of :class:`cman._sys.unixhttp.Response`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from ..._sys import unixhttp as _http

if TYPE_CHECKING:
    import http.client

    from .api import _SshSocket


def unanswered(err: BaseException) -> bool:
    """The kept connection was closed before any byte of an answer (safe to send again)."""
    import http.client

    return isinstance(err, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))


class SshConnection:
    """One HTTP/1.1 connection over one ssh process (``http.client`` on the socketpair)."""

    def __init__(self, dial: Callable[[], _SshSocket]) -> None:
        import http.client

        outer = self

        class _Http(http.client.HTTPConnection):
            def connect(self) -> None:  # ssh instead of a TCP connect
                outer.ssh = dial()
                self.sock = outer.ssh

        self.http = _Http("localhost")
        self.ssh: _SshSocket | None = None

    def send(self, method: str, target: str, payload: bytes | IO[bytes] | None, headers: dict[str, str],
             timeout: float | None) -> http.client.HTTPResponse:
        if self.http.sock is None:
            self.http.connect()
        self.http.sock.settimeout(timeout)
        self.http.request(method, target, body=payload, headers=headers)
        return self.http.getresponse()

    def end(self, *, done: bool = False) -> str | None:
        """Close the connection (ssh ends with it); what ssh said if it failed. ``done``: an idle
        connection no longer wanted: ssh is ended at once rather than waited for."""
        if done and self.ssh is not None and self.ssh.proc.poll() is None:
            self.ssh.proc.terminate()
        self.http.close()
        return self.ssh.failure() if self.ssh is not None else None


class KeptResponse:
    """A response on a kept connection, with :class:`cman._sys.unixhttp.Response`'s interface:
    closing it gives the connection back when the body was read to its end."""

    def __init__(self, resp: http.client.HTTPResponse, release: Callable[[bool], None]) -> None:
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.body = resp
        self._release: Callable[[bool], None] | None = release

    def read_all(self) -> bytes:
        import http.client

        try:
            return self.body.read()
        except http.client.HTTPException as err:  # the stream broke off (IncompleteRead)
            raise ConnectionError(f"the answer over ssh broke off: {err!r}") from err
        finally:
            self.close()

    def json(self, kind: type | None = None) -> Any:
        data = self.read_all()
        if kind is None and not data.strip():
            return None
        return _http.decode_json(data, kind, self.status)

    def close(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        whole = self.body.isclosed()  # http.client closes a response read to its end
        reusable = whole and not self.body.will_close
        self.body.close()
        release(reusable)
