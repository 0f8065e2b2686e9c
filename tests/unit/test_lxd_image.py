"""LXD image plumbing without LXD: references, the short-name map, unified tarballs."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from cman import images
from cman.backends.lxd import imagebuild as li
from cman.errors import InvalidName, InvalidValue


def _tarball(path: Path, *, prefix: str = "", os_release: str | None = None) -> Path:
    """A tiny rootfs tarball: a dir, a file, a symlink, a hard link (optionally os-release)."""
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes | None = None, **kw: object) -> None:
            info = tarfile.TarInfo(prefix + name)
            info.mtime = 1700000000
            for k, v in kw.items():
                setattr(info, k, v)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        if prefix:
            add(".", type=tarfile.DIRTYPE, mode=0o755)
        add("bin", type=tarfile.DIRTYPE, mode=0o755)
        add("bin/busybox", b"\x7fELF fake", mode=0o755)
        add("bin/sh", type=tarfile.SYMTYPE, linkname="busybox")
        add("bin/ash", type=tarfile.LNKTYPE, linkname=prefix + "bin/busybox")
        add("etc", type=tarfile.DIRTYPE, mode=0o755)
        if os_release is not None:
            add("etc/os-release", os_release.encode(), mode=0o644)
    return path


# -- references ------------------------------------------------------------------------------


def test_remote_refs() -> None:
    r = li.parse_remote("images:debian/12")
    assert r is not None
    assert (r.server, r.alias, r.canonical) == ("https://images.linuxcontainers.org", "debian/12", "images:debian/12")
    url = li.parse_remote("https://127.0.0.1:8443/streams:busybox/1.36")
    assert url is not None
    assert (url.server, url.alias) == ("https://127.0.0.1:8443/streams", "busybox/1.36")
    assert li.parse_remote("https://example.org:alpine") is not None
    assert li.parse_remote("cmantest-bb") is None
    assert li.parse_remote("notaremote:thing") is None  # a local alias that contains ':'


@pytest.mark.parametrize("ref", ["https://host", "https://host:8443", "http://host:alias", "images:", "https://h: x"])
def test_bad_remote_refs(ref: str) -> None:
    with pytest.raises(InvalidName):
        li.parse_remote(ref)


def test_short_names_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(images.MAP_ENV["lxd"], raising=False)
    assert li.expand("ubuntu") == "images:ubuntu/22.04"
    assert li.expand("debian:12") == "images:debian/12"
    assert li.expand("cmantest-bb") == "cmantest-bb"
    monkeypatch.setenv(images.MAP_ENV["lxd"], json.dumps({"ubuntu": "images:ubuntu/24.04", "mine": "images:alpine/edge"}))
    assert li.expand("ubuntu") == "images:ubuntu/24.04"
    assert li.expand("mine") == "images:alpine/edge"
    assert li.expand("debian") == "images:debian/12"  # defaults stay
    monkeypatch.setenv(images.MAP_ENV["lxd"], "[1, 2]")
    with pytest.raises(InvalidValue, match=images.MAP_ENV["lxd"]):
        li.expand("ubuntu")


def test_remotes_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(li.ENV_REMOTES, json.dumps({"mirror": "https://10.201.0.1:8443"}))
    r = li.parse_remote("mirror:debian/12")
    assert r is not None and r.server == "https://10.201.0.1:8443"
    monkeypatch.setenv(li.ENV_REMOTES, json.dumps({"plain": "http://10.201.0.1"}))
    with pytest.raises(InvalidValue):
        li.parse_remote("plain:x")


@pytest.mark.parametrize("name", ["", "-x", "a b", "tab\there", "nl\n", "x" * 256])
def test_bad_alias(name: str) -> None:
    with pytest.raises(InvalidName):
        li.check_alias(name)


def test_fingerprint_shape() -> None:
    assert li.looks_like_fingerprint("ae6d215f")
    assert not li.looks_like_fingerprint("ae6d21")
    assert not li.looks_like_fingerprint("cmantest-bb")


# -- unified tarball -------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "./"])
def test_build_unified_layout(tmp_path: Path, prefix: str) -> None:
    src = _tarball(tmp_path / "rootfs.tar.gz", prefix=prefix, os_release='ID=busybox\nVERSION_ID="1.36"\n')
    built = li.build_unified(src, "bb", out_dir=tmp_path)
    try:
        with tarfile.open(built.path) as tar:
            names = tar.getnames()
            assert names[-1] == "metadata.yaml"
            assert names[0] == "rootfs"
            assert {"rootfs/bin", "rootfs/bin/busybox", "rootfs/bin/sh", "rootfs/bin/ash", "rootfs/etc/os-release"} <= set(names)
            assert tar.getmember("rootfs/bin/sh").linkname == "busybox"  # symlinks stay relative
            assert tar.getmember("rootfs/bin/ash").linkname == "rootfs/bin/busybox"  # hard links follow the move
            meta_file = tar.extractfile("metadata.yaml")
            assert meta_file is not None
            meta = json.loads(meta_file.read())  # JSON is YAML
            busybox = tar.extractfile("rootfs/bin/busybox")
            assert busybox is not None and busybox.read() == b"\x7fELF fake"
        assert meta["architecture"] == images.host_architecture()
        assert meta["creation_date"] == int(src.stat().st_mtime)
        assert meta["properties"]["os"] == "busybox"
        assert meta["properties"]["release"] == "1.36"
        assert meta["properties"]["name"] == "bb"
    finally:
        built.path.unlink()


def test_build_unified_is_deterministic(tmp_path: Path) -> None:
    src = _tarball(tmp_path / "rootfs.tar.gz")
    a = li.build_unified(src, "bb", out_dir=tmp_path)
    b = li.build_unified(src, "bb", out_dir=tmp_path)
    c = li.build_unified(src, "other", out_dir=tmp_path)
    try:
        assert a.fingerprint == b.fingerprint
        assert a.fingerprint != c.fingerprint  # the name is part of the metadata
        assert a.path.read_bytes() == b.path.read_bytes()
    finally:
        for x in (a, b, c):
            x.path.unlink()


def test_build_unified_refuses_escapes_and_garbage(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../../etc/passwd")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InvalidValue, match=r"\.\."):
        li.build_unified(evil, "evil", out_dir=tmp_path)
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not a tarball at all")
    with pytest.raises(InvalidValue, match="tar"):
        li.build_unified(garbage, "g", out_dir=tmp_path)
    assert not list(tmp_path.glob("cman-lxd-image-*")), "no temporary file is left behind"


def test_build_unified_reads_the_architecture_from_the_rootfs(tmp_path: Path) -> None:
    """An aarch64 busybox makes an aarch64 image, whatever the host is (as raw LXC's store says)."""
    import io as _io

    elf = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (183).to_bytes(2, "little") + b"\0" * 5000
    src = tmp_path / "arm.tar"
    with tarfile.open(src, "w") as tar:
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(elf)
        tar.addfile(info, _io.BytesIO(elf))
    built = li.build_unified(src, "arm", out_dir=tmp_path)
    try:
        with tarfile.open(built.path) as tar:
            meta = json.loads(tar.extractfile("metadata.yaml").read())  # type: ignore[union-attr]
            assert tar.extractfile("rootfs/bin/busybox").read() == elf  # type: ignore[union-attr]
        assert meta["architecture"] == "aarch64"
    finally:
        built.path.unlink()


# -- pinned certificates of image servers ($CMAN_LXD_REMOTE_CERTS) ---------------------------------

PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2Fu\nbWFu+/8=\n-----END CERTIFICATE-----\n"


def test_a_remote_certificate_is_pinned_by_name_or_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert = tmp_path / "mirror.crt"
    cert.write_text("subject=CN = mirror\n" + PEM)  # text around the PEM block is left out
    monkeypatch.setenv(li.ENV_REMOTES, json.dumps({"mirror": "https://127.0.0.1:8443"}))
    monkeypatch.setenv(li.ENV_REMOTE_CERTS, json.dumps({"mirror": str(cert), "https://127.0.0.1:9443": str(cert)}))
    named = li.parse_remote("mirror:busybox")
    assert named is not None and named.certificate == PEM
    by_url = li.parse_remote("https://127.0.0.1:9443:busybox")
    assert by_url is not None and by_url.certificate == PEM
    other = li.parse_remote("https://127.0.0.1:7443:busybox")
    assert other is not None and other.certificate is None


@pytest.mark.parametrize(("content", "needle"), [(None, "cannot read"), ("hello\n", "not a PEM certificate"),
                                                 (PEM.replace("END", "FIN"), "not a PEM certificate")])
def test_bad_pinned_certificates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None,
                                 needle: str) -> None:
    cert = tmp_path / "c.crt"
    if content is not None:
        cert.write_text(content)
    monkeypatch.setenv(li.ENV_REMOTES, json.dumps({"mirror": "https://127.0.0.1:8443"}))
    monkeypatch.setenv(li.ENV_REMOTE_CERTS, json.dumps({"mirror": str(cert)}))
    with pytest.raises(InvalidValue, match=needle):
        li.parse_remote("mirror:busybox")


def test_pull_failures_are_classified(monkeypatch: pytest.MonkeyPatch) -> None:
    from cman.backends.lxd import LxdBackend
    from cman.errors import EngineUnavailable, ImageNotFound

    backend = LxdBackend()
    backend._client = type("C", (), {"host_info": {"config": {"core.proxy_https": "http://127.0.0.1:9"}}})()
    local = li.RemoteRef("https://127.0.0.1:8443", "busybox", "mirror:busybox")
    far = li.RemoteRef("https://images.linuxcontainers.org", "debian/12", "images:debian/12")
    missing = backend._pull_failed("mirror:busybox", local, "Failed getting image: The requested image couldn't be found")
    assert isinstance(missing, ImageNotFound) and "busybox is not on https://127.0.0.1:8443" in str(missing)
    untrusted = backend._pull_failed("mirror:busybox", local, "x509: certificate signed by unknown authority")
    assert isinstance(untrusted, EngineUnavailable) and li.ENV_REMOTE_CERTS in str(untrusted)
    down = backend._pull_failed("mirror:busybox", local, "connection refused")
    assert isinstance(down, EngineUnavailable) and "proxy" not in str(down), "loopback never goes through it"
    proxied = backend._pull_failed("images:debian/12", far, "proxyconnect tcp: connection refused")
    assert "through the proxy http://127.0.0.1:9" in str(proxied)


_REFUSED = ('Failed getting remote image info: Failed getting image: Failed parsing stream: Get '
            '"https://127.0.0.1:8443/aliases/streams/v1/index.json": Unable to connect to: 127.0.0.1:8443 '
            '([dial tcp 127.0.0.1:8443: connect: connection refused])')


@pytest.mark.parametrize(("text", "missing"), [
    ("Failed getting remote image info: Failed getting image: The requested image couldn't be found", True),
    ("Alias 'busybox' not found", True),
    (_REFUSED, False),
    ('Get "https://127.0.0.1:8443/aliases/streams/v1/index.json": net/http: TLS handshake timeout', False),
    ("Failed parsing stream: Unable to fetch https://127.0.0.1:8443/aliases/streams/v1/index.json: "
     "503 Service Unavailable", False),
    ("Failed parsing stream: Unable to fetch https://127.0.0.1:8443/aliases/streams/v1/index.json: 404 Not Found",
     False),
    ("Unable to fetch https://127.0.0.1:8443/certificates/not-found/streams/v1/index.json: 502 Bad Gateway", False),
])
def test_only_the_daemons_words_say_an_image_is_missing(text: str, missing: bool) -> None:
    """A server that is down, slow, failing or not a simplestreams server is "cannot be reached",
    whatever words its URL has (here a server under /aliases): "is not on" needs the daemon's
    own "couldn't be found" or "alias ... not found"."""
    from cman.backends.lxd import LxdBackend
    from cman.errors import EngineUnavailable, ImageNotFound

    remote = li.RemoteRef("https://127.0.0.1:8443/aliases", "busybox", "mirror:busybox")
    err = LxdBackend()._pull_failed("mirror:busybox", remote, text)
    if missing:
        assert isinstance(err, ImageNotFound), err
        assert "busybox is not on https://127.0.0.1:8443/aliases" in str(err)
        assert "index" in str(err) and "an hour" in str(err), "the hint names the daemon's cached index"
    else:
        assert isinstance(err, EngineUnavailable) and "cannot be reached" in str(err), err
        assert "not trusted" not in str(err), err
