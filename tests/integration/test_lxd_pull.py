"""A real LXD pull: the daemon downloads an image from a simplestreams server over HTTPS.

No public image server can be reached from here (the daemons' egress goes to a dead proxy),
so the test serves one itself, on 127.0.0.1 only: a small HTTPS server with a fresh
self-signed certificate, whose ``streams/v1`` index offers the busybox test image as one
``lxd_combined.tar.gz`` (a unified image, built by cman's own :mod:`imagebuild`). The file
is sent slowly, so the pull lasts a few seconds and reports progress. cman is told the
server's certificate with ``CMAN_LXD_REMOTE_CERTS`` and passes it to the daemon in the
pull's ``source.certificate``, as ``lxc remote add`` pins a server's certificate.

Each server serves under a path of its own (``https://127.0.0.1:PORT/cmantest-XXXXXX-TOKEN``),
never at the port's root: the daemon keeps a copy of a server's index in its cache directory,
one folder per server URL, and reads that copy instead of asking the server for an hour (and
for longer whenever the server does not answer). Under a bare ``https://127.0.0.1:PORT``, a
server of an earlier run that had the same ephemeral port answered for this run's server:
its index has that run's alias, not this one's, so the pull failed ("... is not on ...").

The image, its alias and the server are removed afterwards, also when a test fails, and so
is the daemon's cached copy of the server's index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cman.backends.lxd import LxdBackend, imagebuild
from cman.errors import CmanError

from ..conftest import ROOTFS, assert_clean_error, cli, not_selected, unavailable

pytestmark = pytest.mark.engine

RUN = f"cmantest-{secrets.token_hex(3)}"
RATE = 256 * 1024
"""Bytes per second the server sends an image file at: a pull of ~1 MB takes seconds."""


@dataclass
class ImageServer:
    url: str
    certificate: Path
    remote: str
    alias: str
    fingerprint: str
    size: int
    requests: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "CMAN_LXD_ENDPOINT": "",
            "CMAN_LXD_REMOTES": json.dumps({self.remote: self.url}),
            "CMAN_LXD_REMOTE_CERTS": json.dumps({self.remote: str(self.certificate)}),
        }


def _streams(product: str, alias: str, path: str, fingerprint: str, size: int) -> dict[str, bytes]:
    """The two JSON files of a simplestreams image server with one image."""
    index = {"format": "index:1.0", "index": {"images": {
        "datatype": "image-downloads", "path": "streams/v1/images.json", "format": "products:1.0",
        "products": [product],
    }}}
    products = {"content_id": "images", "datatype": "image-downloads", "format": "products:1.0", "products": {
        product: {
            "aliases": alias, "arch": "amd64", "os": "busybox", "release": "cman", "release_title": "cman test",
            "variant": "default",
            "versions": {"20240101_0000": {"items": {
                "lxd_combined.tar.gz": {"ftype": "lxd_combined.tar.gz", "path": path, "sha256": fingerprint,
                                        "size": size},
            }}},
        },
    }}
    return {"/streams/v1/index.json": json.dumps(index).encode(),
            "/streams/v1/images.json": json.dumps(products).encode()}


def _certificate(folder: Path) -> tuple[Path, Path]:
    crt, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", f"/CN={RUN}-images",
         "-addext", "subjectAltName=DNS:cman-test-images,IP:127.0.0.1"],
        capture_output=True, check=True, timeout=60,
    )
    return crt, key


LXD_CACHE_DIRS = (Path("/var/cache/lxd"), Path("/var/snap/lxd/common/lxd/cache"))
"""Where the daemon (deb, snap) keeps its copies of simplestreams indexes, one folder per server URL."""


def _forget_index(url: str) -> None:
    """Remove the daemon's cached copy of the index of the server at ``url`` (only that one)."""
    name = hashlib.sha256(url.encode()).hexdigest()
    for folder in LXD_CACHE_DIRS:
        shutil.rmtree(folder / name, ignore_errors=True)


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[ImageServer]:
    """The HTTPS image server on 127.0.0.1, in a thread of this process, under a URL path no
    other server ever had (see the module's docstring: the daemon's index cache is per URL)."""
    built = imagebuild.build_unified(ROOTFS, f"{RUN}-served", out_dir=folder)
    crt, key = _certificate(folder)
    image_path = f"images/busybox/cman/amd64/default/20240101_0000/{RUN}.lxd_combined.tar.gz"
    alias = f"{RUN}/busybox"
    size = built.path.stat().st_size
    files = _streams(f"busybox:cman:amd64:{RUN}", alias, image_path, built.fingerprint, size)
    base = f"/{RUN}-{secrets.token_hex(6)}"
    seen: list[str] = []  # the paths asked for, relative to base (one elsewhere whole: it gets a 404)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            full = self.path.split("?", 1)[0]
            if not full.startswith(base + "/"):
                seen.append(full)
                self.send_error(404)
                return
            path = full[len(base):]
            seen.append(path)
            if path == "/" + image_path:
                self._send_slowly(built.path)
                return
            body = files.get(path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_slowly(self, file: Path) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(file.stat().st_size))
            self.end_headers()
            with open(file, "rb") as data:
                while chunk := data.read(RATE // 10):
                    self.wfile.write(chunk)
                    time.sleep(0.1)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}{base}"
    try:
        yield ImageServer(url, crt, f"{RUN}-mirror", alias, built.fingerprint, size, seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        built.path.unlink(missing_ok=True)
        _forget_index(url)


@pytest.fixture(scope="module")
def backend() -> Iterator[LxdBackend]:
    not_selected("lxd")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CMAN_LXD_ENDPOINT", raising=False)
        status = LxdBackend.probe()
        if not status.reachable:
            unavailable(f"lxd: {status.problem} (fix: {status.fix})")
        b = LxdBackend()
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def server(backend: LxdBackend, tmp_path: Path) -> Iterator[ImageServer]:
    if not ROOTFS.is_file():
        unavailable(f"test rootfs {ROOTFS} is missing: run scripts/setup-engines.sh")
    if shutil.which("openssl") is None:
        unavailable("openssl is needed for the image server's certificate")
    with serve(tmp_path) as srv:
        if any(i.id == srv.fingerprint for i in backend.images()):
            unavailable(f"an image with the served fingerprint {srv.fingerprint[:12]} is already in LXD")
        try:
            yield srv
        finally:
            for img in backend.images():
                if img.id == srv.fingerprint or any(t.startswith(RUN) for t in img.tags):
                    with contextlib.suppress(CmanError):
                        backend.image_remove(img.id, force=True)


def _pull(srv: ImageServer, ref: str, **env: str) -> subprocess.CompletedProcess[str]:
    return cli("pull", ref, backend="lxd", env={**srv.env(), **env}, timeout=300)


def test_a_real_pull_with_progress(server: ImageServer, backend: LxdBackend) -> None:
    ref = f"{server.remote}:{server.alias}"
    proc = _pull(server, ref)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"lxd:{ref}"
    lines = proc.stderr.splitlines()
    assert lines[0] == f"Pulling {server.alias} from {server.url}", lines
    assert lines[-1] == f"Pulled {ref} ({server.fingerprint[:12]})", lines
    progress = [line for line in lines if "Downloading" in line]
    assert len(progress) >= 2, f"progress events while the daemon downloads: {lines}"
    assert "/" + "streams/v1/index.json" in server.requests
    assert any(p.endswith(".lxd_combined.tar.gz") for p in server.requests), "the daemon downloaded the file"
    image = backend.image_inspect(ref)
    assert image.id == server.fingerprint, "the bytes the server sent, checked by LXD's sha256"
    history = json.loads(cli("image", "history", ref, "--json", backend="lxd", env=server.env()).stdout)
    assert history[0]["created_by"] == f"pulled from {server.url}:{server.alias}"
    # the pulled image runs, and the next run finds it without pulling again
    before = len(server.requests)
    run = cli("run", "--rm", ref, "echo", "from-the-pulled-image", backend="lxd", env=server.env(), timeout=180)
    assert (run.returncode, run.stdout) == (0, "from-the-pulled-image\n"), run.stderr
    assert len(server.requests) == before


def test_an_unpinned_self_signed_server_is_refused(server: ImageServer, backend: LxdBackend) -> None:
    proc = _pull(server, f"{server.remote}:{server.alias}", CMAN_LXD_REMOTE_CERTS="{}")
    assert_clean_error(proc, 5, "is not trusted", "certificate", "CMAN_LXD_REMOTE_CERTS")
    assert not any(i.id == server.fingerprint for i in backend.images())


def test_a_missing_alias_on_the_server_is_not_found(server: ImageServer) -> None:
    proc = _pull(server, f"{server.remote}:{RUN}/nothing")
    assert_clean_error(proc, 3, "not on")


@pytest.mark.parametrize(("certs", "needle"), [('{"X": "/nonexistent/c.pem"}', "cannot read"),
                                               ("not json", "not JSON")])
def test_bad_certificate_settings_are_usage_errors(server: ImageServer, tmp_path: Path, certs: str,
                                                   needle: str) -> None:
    proc = _pull(server, f"{server.remote}:{server.alias}",
                 CMAN_LXD_REMOTE_CERTS=certs.replace("X", server.remote))
    assert_clean_error(proc, 2, needle)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    proc = _pull(server, f"{server.remote}:{server.alias}",
                 CMAN_LXD_REMOTE_CERTS=json.dumps({server.remote: str(not_pem)}))
    assert_clean_error(proc, 2, "not a PEM certificate")


def test_served_file_is_what_lxd_checks(server: ImageServer) -> None:
    """The fingerprint in the index is the file's sha256 (what makes the pull verifiable)."""
    data = b""
    ctx = ssl.create_default_context(cafile=str(server.certificate))
    import urllib.request

    with urllib.request.urlopen(server.url + "/streams/v1/images.json", context=ctx, timeout=30) as answer:
        data = answer.read()
    item = next(iter(json.loads(data)["products"].values()))["versions"]["20240101_0000"]["items"]
    entry = item["lxd_combined.tar.gz"]
    assert entry["sha256"] == server.fingerprint and entry["size"] == server.size
    assert hashlib.sha256(b"").hexdigest() != server.fingerprint
