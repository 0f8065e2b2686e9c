"""The Docker transports against fake daemons: API version negotiation on every transport,
strict answers (redirects, empty or non-object bodies), and what may go into a path."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cman._sys import unixhttp
from cman.backends.docker import DockerBackend, endpoint, refs
from cman.backends.docker.api import CLIENT_API_VERSION, ApiError, SdkTransport, UnixTransport
from cman.errors import EngineError, EngineUnavailable, InvalidName, InvalidValue

Answer = tuple[int, dict[str, str], bytes]
Handler = Callable[[str, str], Answer]


def ok(doc: object, version: str | None = "1.41") -> Answer:
    headers = {"Content-Type": "application/json"}
    if version:
        headers["Api-Version"] = version
    return 200, headers, json.dumps(doc).encode()


def pinged(version: str | None, then: Handler) -> Handler:
    """A daemon whose /_ping says ``version`` (no header when None); ``then`` answers the rest."""

    def handle(method: str, path: str) -> Answer:
        if path == "/_ping":
            return 200, ({"Api-Version": version} if version else {}), b"OK"
        return then(method, path)

    return handle


class FakeDaemon:
    """HTTP over a unix socket, one request per connection, as dockerd answers HTTP/1.0."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = str(path)
        self.handler = handler
        self.requests: list[str] = []
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(self.path)
        self.server.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                method, target = data.split(b"\r\n")[0].decode().split()[:2]
                self.requests.append(f"{method} {target}")
                status, headers, body = self.handler(method, target.partition("?")[0])
                head = [f"HTTP/1.0 {status} X", *(f"{k}: {v}" for k, v in headers.items())]
                conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Handler], FakeDaemon]]:
    monkeypatch.delenv("DOCKER_API_VERSION", raising=False)
    made: list[FakeDaemon] = []

    def make(handler: Handler) -> FakeDaemon:
        made.append(FakeDaemon(tmp_path / f"d{len(made)}.sock", handler))
        monkeypatch.setenv("DOCKER_HOST", f"unix://{made[-1].path}")
        return made[-1]

    yield make
    for d in made:
        d.close()


# -- API version: negotiated once per connection, as the docker CLI does ---------------------------


@pytest.mark.parametrize(("server", "spoken"), [("1.41", "1.41"), ("1.44", "1.44"), ("1.99", CLIENT_API_VERSION),
                                                ("2.0", CLIENT_API_VERSION)])
def test_unix_paths_are_versioned_with_the_lower_version(daemon: Callable[[Handler], FakeDaemon], server: str,
                                                         spoken: str) -> None:
    d = daemon(pinged(server, lambda _m, _p: ok([])))
    backend = DockerBackend()
    assert backend.containers(all=True) == []
    assert backend.containers() == []
    # one ping per connection, then every path carries the version
    assert d.requests == ["GET /_ping", f"GET /v{spoken}/containers/json?all=1", f"GET /v{spoken}/containers/json?all=0"]


def test_docker_api_version_is_used_as_is_without_a_ping(daemon: Callable[[Handler], FakeDaemon],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    d = daemon(pinged("1.41", lambda _m, _p: ok([])))
    monkeypatch.setenv("DOCKER_API_VERSION", "1.40")
    DockerBackend().containers()
    assert d.requests == ["GET /v1.40/containers/json?all=0"]


@pytest.mark.parametrize("value", ["latest", "1", "1.x", "v1.41", "1.29"])
def test_bad_docker_api_version_is_a_usage_error(daemon: Callable[[Handler], FakeDaemon],
                                                 monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    d = daemon(pinged("1.41", lambda _m, _p: ok([])))
    monkeypatch.setenv("DOCKER_API_VERSION", value)
    with pytest.raises(InvalidValue, match="DOCKER_API_VERSION"):
        DockerBackend().containers()
    assert d.requests == []


def test_a_daemon_too_old_for_cman_says_so(daemon: Callable[[Handler], FakeDaemon]) -> None:
    daemon(pinged(None, lambda _m, _p: ok([])))  # no API-Version header: 1.24, the docker CLI's fallback
    with pytest.raises(EngineUnavailable, match=r"speaks Engine API 1\.24, cman needs 1\.30"):
        DockerBackend().containers()


def test_probe_speaks_versioned_paths(daemon: Callable[[Handler], FakeDaemon]) -> None:
    d = daemon(pinged("1.41", lambda _m, _p: ok({"Version": "20.10.24"})))
    status = DockerBackend.probe()
    assert status.reachable and status.version == "20.10.24"
    assert d.requests == ["GET /_ping", "GET /v1.41/version"]


def test_empty_docker_host_means_the_local_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "")
    assert endpoint.docker_host() == endpoint.DEFAULT_HOST
    assert endpoint.docker_socket() == "/var/run/docker.sock"
    assert endpoint.locality().local
    assert isinstance(endpoint.open_transport(), UnixTransport)


class _TcpDaemon(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []
    version = "1.99"

    def do_GET(self) -> None:
        self.requests.append(f"GET {self.path}")
        body = b"OK" if self.path == "/_ping" else b"[]"
        self.send_response(200)
        self.send_header("Api-Version", self.version)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def tcp_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_TcpDaemon]]:
    monkeypatch.delenv("DOCKER_API_VERSION", raising=False)
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    handler = type("Handler", (_TcpDaemon,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{server.server_address[1]}")
    yield handler
    server.shutdown()
    server.server_close()


def test_sdk_transport_negotiates_like_the_others(tcp_daemon: type[_TcpDaemon]) -> None:
    transport = SdkTransport()
    assert transport.call("GET", "/containers/json", kind=list) == []
    assert transport.call("GET", "/images/json", kind=list) == []
    # docker-py's "auto" took the daemon's version as is (1.99), and asked /version for it
    assert tcp_daemon.requests == ["GET /_ping", f"GET /v{CLIENT_API_VERSION}/containers/json",
                                   f"GET /v{CLIENT_API_VERSION}/images/json"]
    transport.close()


def test_sdk_transport_takes_docker_api_version(tcp_daemon: type[_TcpDaemon], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_API_VERSION", "1.41")
    transport = SdkTransport()
    transport.call("GET", "/containers/json")
    assert tcp_daemon.requests == ["GET /v1.41/containers/json"]
    transport.close()


# -- answers that are not the record asked for -------------------------------------------------------


def test_a_redirect_is_an_error_not_an_empty_record(daemon: Callable[[Handler], FakeDaemon]) -> None:
    # what Go's server answers to a path with '..' segments
    daemon(pinged("1.41", lambda _m, _p: (301, {"Location": "/v1.41/x/json"}, b"")))
    with pytest.raises(EngineError, match=r"unexpected redirect to /v1\.41/x/json"):
        DockerBackend().inspect("web")


@pytest.mark.parametrize("body", [b"", b"null", b"[]", b"not json", b'"text"'])
def test_an_empty_or_non_object_answer_is_an_error(daemon: Callable[[Handler], FakeDaemon], body: bytes) -> None:
    daemon(pinged("1.41", lambda _m, _p: (200, {}, body)))
    backend = DockerBackend()
    for call in (lambda: backend.inspect("web"), lambda: backend.network_inspect("net"),
                 lambda: backend.image_inspect("local/busybox")):
        with pytest.raises(EngineError, match=r"expected a JSON object|empty answer|not JSON"):
            call()


def test_a_listing_that_is_not_a_list_is_an_error(daemon: Callable[[Handler], FakeDaemon]) -> None:
    daemon(pinged("1.41", lambda _m, _p: ok({"message": "?"})))
    with pytest.raises(EngineError, match="expected a JSON array"):
        DockerBackend().containers(all=True)


def test_unixhttp_refuses_redirects_and_bodies_that_are_not_documents(daemon: Callable[[Handler], FakeDaemon]) -> None:
    d = daemon(lambda _m, p: (302, {"Location": "/elsewhere"}, b"moved") if p == "/r" else (200, {}, b""))
    with pytest.raises(unixhttp.HTTPStatusError, match="unexpected redirect to /elsewhere") as err:
        unixhttp.request(d.path, "GET", "/r")
    assert err.value.status == 302
    with pytest.raises(unixhttp.BadResponse, match="empty answer"):
        unixhttp.get_json(d.path, "/empty")
    with pytest.raises(ValueError, match="not a request path"):
        unixhttp.request(d.path, "GET", "/a b HTTP/1.0\r\nX: y")


def test_ids_from_the_daemon_are_checked_before_they_go_into_a_path() -> None:
    assert refs.engine_id("ab" * 32) == "ab" * 32
    for bad in ("../x", "", None, "ABC", "12345"):
        with pytest.raises(ApiError):
            refs.engine_id(bad)


# -- what may go into a path ----------------------------------------------------------------------------

HOSTILE = ["..", ".", "../containers/x", "a/../../x", "a/b", "a b", "x%2F..", "", "-x", ".hidden", "a\nb",
           "a?all=1", "a#b", "é", "x" * 256]


@pytest.mark.parametrize("ref", HOSTILE)
def test_hostile_container_and_network_refs_are_refused(ref: str) -> None:
    with pytest.raises(InvalidName, match="invalid container reference"):
        refs.container(ref)
    with pytest.raises(InvalidName, match="invalid network reference"):
        refs.network(ref)


@pytest.mark.parametrize("ref", ["web", "a1", "my_app.v2-x", "4c0f5b1e2a9d", "f" * 64, "x"])
def test_container_refs(ref: str) -> None:
    assert refs.container(ref) == ref


@pytest.mark.parametrize("ref", ["../../etc/passwd", "../etc/passwd", "a.b/../x", "local/../x", "x/./y",
                                 "localhost:5000/../../x", "-h.x/y", "h_x.y/z", "a/b:", "a@sha256:xyz"])
def test_hostile_image_refs_are_refused(ref: str) -> None:
    with pytest.raises(InvalidName):
        refs.image(ref)


@pytest.mark.parametrize("ref", ["busybox", "local/busybox:latest", "127.0.0.1:5000/cman/busybox:1.0",
                                 "localhost/x", "my-registry.example:443/a/b__c---d:T_1.0",
                                 "a/b@sha256:" + "0" * 64, "sha256:" + "a" * 64, "f98e65ee5d7f"])
def test_image_refs(ref: str) -> None:
    assert refs.image(ref) == ref


def test_a_server_that_closes_without_answering_is_a_reset_connection(tmp_path: Path) -> None:
    """A daemon shutting down accepts, reads and closes: that is a lost connection (retried
    for idempotent calls, then "unavailable"), not a malformed answer (exit 1)."""
    path = str(tmp_path / "closing.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def close_at_once() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.close()

    worker = threading.Thread(target=close_at_once, daemon=True)
    worker.start()
    try:
        with pytest.raises(ConnectionResetError, match="without answering"):
            unixhttp.request(path, "GET", "/1.0/instances")
    finally:
        worker.join(timeout=5)
        server.close()
