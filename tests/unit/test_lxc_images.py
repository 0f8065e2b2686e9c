"""cman's LXC image store: import, names, remove, prune, without running LXC."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from cman._sys import proc as _proc
from cman.backends.lxc import LxcBackend, connection, store, tools
from cman.errors import ImageNotFound, InUse, InvalidName, InvalidValue


def _tarball(path: Path, *, unified: bool = False, init: bool = True, mode: str = "w:gz") -> Path:
    prefix = "rootfs/" if unified else ""
    elf = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\0" + (62).to_bytes(2, "little") + b"\0" * 40  # x86_64
    with tarfile.open(path, mode) as tar:
        def add(name: str, data: bytes = b"", link: str | None = None) -> None:
            info = tarfile.TarInfo(prefix + name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if link is None else None)

        add("bin/busybox", elf)
        add("bin/sh", link="busybox")
        if init:
            add("sbin/init", link="../bin/busybox")
        if unified:
            meta = b"architecture: aarch64\ncreation_date: 1\n"
            info = tarfile.TarInfo("metadata.yaml")
            info.size = len(meta)
            tar.addfile(info, io.BytesIO(meta))
    return path


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LxcBackend:
    monkeypatch.setenv(tools.ENV_LXC_PATH, str(tmp_path / "lxc"))
    monkeypatch.setenv(tools.ENV_IMAGES, str(tmp_path / "images"))
    monkeypatch.setattr(connection.shutil, "which", lambda name: f"/usr/bin/{name}")

    def no_tools(*args: object, **kwargs: object) -> None:
        pytest.fail(f"image operations run no tool: {args!r}")

    monkeypatch.setattr(_proc, "run", no_tools)
    (tmp_path / "lxc").mkdir()
    return LxcBackend()


def _fake_container(backend: LxcBackend, name: str, image_id: str) -> None:
    d = Path(backend.lxcpath) / name
    d.mkdir()
    (d / "config").write_text("lxc.uts.name = x\n")
    (d / "cman.json").write_text(json.dumps({"managed": True, "image_id": image_id}))


def test_import_stores_tarball_and_metadata(backend: LxcBackend, tmp_path: Path) -> None:
    src = _tarball(tmp_path / "rootfs.tar.gz")
    image = backend.image_import(src, "cmantest-bb")
    assert image.backend == "lxc" and image.id.startswith("sha256:")
    assert image.tags == ("cmantest-bb",)
    assert image.architecture == "x86_64"
    assert image.size == src.stat().st_size
    meta = backend.store.get("cmantest-bb")
    assert backend.store.tarball_of(meta).read_bytes() == src.read_bytes()
    import hashlib

    assert meta["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta["source"] == {"kind": "import", "path": str(src)}
    assert meta["default_command"] == ["/bin/sh"]
    assert backend.image_inspect("cmantest-bb:latest").id == image.id
    assert backend.image_inspect(image.id.removeprefix("sha256:")[:12]).id == image.id
    hist = backend.image_history("cmantest-bb")
    assert len(hist) == 1 and hist[0].created_by.startswith("cman image import")


@pytest.mark.parametrize(("mode", "suffix"), [("w", ""), ("w:gz", ".gz"), ("w:xz", ".xz"), ("w:bz2", ".bz2")])
def test_import_compressions(backend: LxcBackend, tmp_path: Path, mode: str, suffix: str) -> None:
    src = _tarball(tmp_path / f"rootfs.tar{suffix}", mode=mode)
    backend.image_import(src, "img")
    assert backend.store.get("img")["file"] == f"rootfs.tar{suffix}"


def test_import_unified_lxd_layout(backend: LxcBackend, tmp_path: Path) -> None:
    backend.image_import(_tarball(tmp_path / "u.tar.gz", unified=True), "unified")
    meta = backend.store.get("unified")
    assert meta["rootfs_prefix"] == "rootfs"
    assert meta["architecture"] == "aarch64"


def test_import_refuses_rootfs_without_init(backend: LxcBackend, tmp_path: Path) -> None:
    with pytest.raises(InvalidValue, match="init"):
        backend.image_import(_tarball(tmp_path / "r.tar.gz", init=False), "noinit")
    assert backend.images() == []
    assert not list(backend.store.root.glob(".tmp-*")), "no half-imported leftovers"


def test_import_refuses_non_tar(backend: LxcBackend, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(InvalidValue, match="tar"):
        backend.image_import(bad, "x")


@pytest.mark.parametrize("name", ["-x", "a b", "template:busybox", "download:debian/x", "", "x" * 200])
def test_import_refuses_bad_names(backend: LxcBackend, tmp_path: Path, name: str) -> None:
    with pytest.raises((InvalidName, InvalidValue)):
        backend.image_import(_tarball(tmp_path / "r.tar.gz"), name)


def test_each_import_is_a_new_image_and_names_move(backend: LxcBackend, tmp_path: Path) -> None:
    src = _tarball(tmp_path / "r.tar.gz")
    first = backend.image_import(src, "app")
    second = backend.image_import(src, "app")
    assert first.id != second.id
    assert backend.image_inspect("app").id == second.id
    assert backend.image_inspect(first.id).tags == (), "the name moved, like a Docker tag"
    a, b = (backend.store.tarball_of(backend.store.get(i.id)) for i in (first, second))
    assert a.stat().st_ino == b.stat().st_ino, "identical tarballs are hard-linked"


def test_remove_refused_while_used_unless_forced(backend: LxcBackend, tmp_path: Path) -> None:
    image = backend.image_import(_tarball(tmp_path / "r.tar.gz"), "used")
    _fake_container(backend, "cmantest-user", image.id)
    with pytest.raises(InUse, match="cmantest-user"):
        backend.image_remove("used")
    backend.image_remove("used", force=True)
    with pytest.raises(ImageNotFound):
        backend.image_inspect("used")


def test_remove_one_of_several_names_only_untags(backend: LxcBackend, tmp_path: Path) -> None:
    image = backend.image_import(_tarball(tmp_path / "r.tar.gz"), "one")
    backend.store.set_alias(backend.store.get("one"), "two")
    _fake_container(backend, "cmantest-user", image.id)
    backend.image_remove("one")
    assert backend.image_inspect("two").id == image.id
    with pytest.raises(ImageNotFound):
        backend.image_inspect("one")


def test_remove_missing_image(backend: LxcBackend) -> None:
    with pytest.raises(ImageNotFound):
        backend.image_remove("nope")


def test_prune_removes_only_unnamed_unused_images(backend: LxcBackend, tmp_path: Path) -> None:
    src = _tarball(tmp_path / "r.tar.gz")
    old_unused = backend.image_import(src, "a")
    backend.image_import(src, "a")  # "a" moves: old_unused has no name now
    old_used = backend.image_import(src, "b")
    backend.image_import(src, "b")
    _fake_container(backend, "cmantest-user", old_used.id)
    meta_size = (backend.store.dir_of(backend.store.get(old_unused.id)) / "metadata.json").stat().st_size
    result = backend.image_prune()
    assert result.removed == (old_unused.id,)
    assert result.reclaimed_bytes == meta_size, "its tarball is hard-linked to a kept twin: not counted"
    ids = {i.id for i in backend.images()}
    assert old_used.id in ids and old_unused.id not in ids
    assert backend.image_inspect("a") and backend.image_inspect("b")


def test_pull_of_a_stored_name_is_up_to_date(backend: LxcBackend, tmp_path: Path) -> None:
    backend.image_import(_tarball(tmp_path / "r.tar.gz"), "local")
    events = list(backend.pull("local"))
    assert len(events) == 1 and "up to date" in events[0].status


def test_pull_unknown_name_is_not_found(backend: LxcBackend) -> None:
    with pytest.raises(ImageNotFound):
        list(backend.pull("nosuchimage"))


def test_scan_handles_dot_slash_members(tmp_path: Path) -> None:
    path = tmp_path / "dots.tar"
    with tarfile.open(path, "w") as tar:
        for name in ("./", "./sbin/", "./bin/"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        info = tarfile.TarInfo("./sbin/init")
        info.type, info.linkname = tarfile.SYMTYPE, "../bin/busybox"
        tar.addfile(info)
    scan = store.scan_tarball(path)
    assert scan.has_init and scan.prefix == "" and not scan.has_sh
