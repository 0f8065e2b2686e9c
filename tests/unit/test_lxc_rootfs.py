"""An overlay rootfs read and written from the host (cman.backends.lxc.rootfs), on plain folders
laid out as overlayfs leaves them: overlayfs's rules by hand, no mount needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cman._sys.files import UnsafePath
from cman.backends.lxc import rootfs
from cman.backends.lxc.layerusers import add_user, layers_in_use
from cman.backends.lxc.rootfs import Layers
from cman.backends.lxc.tools import Paths


@pytest.fixture
def layers(tmp_path: Path) -> Layers:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("root\n")
    (lower / "etc" / "hosts").write_text("image\n")
    (lower / "bin").mkdir(mode=0o750)
    (lower / "bin" / "ls").write_text("ls\n")
    upper.mkdir()
    return Layers(upper, lower)


def _whiteout(path: Path) -> None:
    os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))  # S_IFCHR 0:0


def test_reads_take_the_upper_first_then_the_lower(layers: Layers) -> None:
    (layers.upper / "etc").mkdir()
    (layers.upper / "etc" / "hosts").write_text("mine\n")
    assert rootfs.read_file(layers, "etc/hosts") == b"mine\n"
    assert rootfs.read_file(layers, "etc/passwd") == b"root\n"
    assert rootfs.read_file(layers, "bin/ls") == b"ls\n"
    assert rootfs.read_file(layers, "nothing/here") is None
    assert rootfs.stat_file(layers, "etc/missing") is None


def test_a_whiteout_and_an_opaque_folder_hide_the_lower(layers: Layers) -> None:
    (layers.upper / "etc").mkdir()
    _whiteout(layers.upper / "etc" / "passwd")
    _whiteout(layers.upper / "bin")
    assert rootfs.read_file(layers, "etc/passwd") is None
    assert rootfs.stat_file(layers, "etc/passwd") is None
    assert rootfs.read_file(layers, "bin/ls") is None
    assert rootfs.read_file(layers, "etc/hosts") == b"image\n", "the rest of the folder stays merged"
    os.setxattr(layers.upper / "etc", "user.overlay.opaque", b"y")
    assert rootfs.read_file(layers, "etc/hosts") is None, "an opaque folder hides all of the lower's"


def test_symlinks_are_never_followed_in_either_layer(layers: Layers, tmp_path: Path) -> None:
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "secret").write_text("host\n")
    (layers.lower / "var").symlink_to(tmp_path / "host")
    with pytest.raises(UnsafePath):
        rootfs.read_file(layers, "var/secret")
    with pytest.raises(UnsafePath):
        rootfs.write_file(layers, "var/secret", b"x")
    assert (tmp_path / "host" / "secret").read_text() == "host\n"
    (layers.lower / "etc" / "link").symlink_to(tmp_path / "host" / "secret")
    with pytest.raises(UnsafePath):
        rootfs.read_file(layers, "etc/link")


def test_writes_go_to_the_upper_with_the_lowers_folders(layers: Layers) -> None:
    rootfs.write_file(layers, "bin/new", b"data", mode=0o600)
    assert (layers.upper / "bin" / "new").read_bytes() == b"data"
    assert (layers.upper / "bin").stat().st_mode & 0o777 == 0o750, "made like the lower's folder"
    assert not (layers.lower / "bin" / "new").exists()
    assert rootfs.read_file(layers, "bin/ls") == b"ls\n", "the folder stays merged"
    rootfs.write_file(layers, "var/log/cman/job.rc", b"", owner=(os.getuid(), os.getgid()))
    assert (layers.upper / "var" / "log" / "cman" / "job.rc").is_file(), "new folders where the lower has none"


def test_a_file_in_the_upper_is_rewritten_in_place(layers: Layers) -> None:
    rootfs.write_file(layers, "var/log/cman/job.rc", b"")
    rc = layers.upper / "var" / "log" / "cman" / "job.rc"
    before = rc.stat().st_ino
    with open(rc, "rb") as held:  # a running container's overlay holds this inode
        rootfs.write_file(layers, "var/log/cman/job.rc", b"7\n")
        assert held.read() == b"7\n"
    assert rc.stat().st_ino == before
    os.link(rc, layers.upper / "var" / "log" / "other")
    rootfs.write_file(layers, "var/log/cman/job.rc", b"0\n")
    assert (layers.upper / "var" / "log" / "other").read_bytes() == b"7\n", "never written through a hard link"


def test_writing_under_a_removed_folder_makes_an_opaque_one(layers: Layers) -> None:
    _whiteout(layers.upper / "etc")
    rootfs.write_file(layers, "etc/resolv.conf", b"nameserver 192.0.2.53\n")
    assert os.getxattr(layers.upper / "etc", "user.overlay.opaque") == b"y"
    assert rootfs.read_file(layers, "etc/passwd") is None, "the lower's folder stays removed"
    assert rootfs.read_file(layers, "etc/resolv.conf") == b"nameserver 192.0.2.53\n"


def test_a_plain_rootfs_is_read_and_written_as_before(tmp_path: Path) -> None:
    plain = Layers(tmp_path)
    rootfs.write_file(plain, "etc/hostname", b"box\n")
    assert rootfs.read_file(plain, "etc/hostname") == b"box\n"
    assert rootfs.stat_file(plain, "etc/nothing") is None


def test_layers_come_from_the_config(tmp_path: Path) -> None:
    paths = Paths(str(tmp_path), "c1")
    paths.dir.mkdir()
    assert rootfs.layers(paths) == Layers(paths.rootfs), "no config yet: plain"
    lower = tmp_path / "images" / "x" / "rootfs.plain"
    paths.config.write_text(f"lxc.rootfs.path = {rootfs.rootfs_value(paths.rootfs, lower)}\n")
    assert rootfs.layers(paths) == Layers(paths.rootfs, lower)
    paths.config.write_text(f"lxc.rootfs.path = {rootfs.rootfs_value(paths.rootfs, None)}\n")
    assert rootfs.layers(paths) == Layers(paths.rootfs)


def test_paths_overlayfs_cannot_take_fall_back_to_a_copy(tmp_path: Path) -> None:
    assert not rootfs.overlay_usable(tmp_path / "a:b", tmp_path)
    assert not rootfs.overlay_usable(tmp_path / "a,b", tmp_path)


def test_a_layer_is_in_use_while_its_container_names_it(tmp_path: Path) -> None:
    image = tmp_path / "images" / "abc"
    lower = image / "rootfs.plain"
    lower.mkdir(parents=True)
    container = tmp_path / "lxc" / "c1"
    container.mkdir(parents=True)
    (container / "cman.json").write_text(json.dumps({"rootfs_lower": str(lower)}))
    add_user(image, lower, container)
    assert layers_in_use(image) == {lower}
    (container / "cman.json").write_text(json.dumps({"rootfs_lower": None}))  # made again, plain
    assert layers_in_use(image) == set()
    assert not list((image / "users").iterdir()), "a dead record is dropped"


def test_an_image_removed_under_a_container_keeps_that_layer_until_it_goes(tmp_path: Path) -> None:
    from cman.backends.lxc.store import REMOVED_MARK, ImageStore

    store = ImageStore(tmp_path / "images")
    image = store.root / ("ab" * 32)
    used, unused = image / "rootfs.plain", image / "rootfs.u1-g1-n65536"
    used.mkdir(parents=True)
    unused.mkdir()
    (image / "rootfs.tar").write_bytes(b"x" * 10)
    meta = {"id": "sha256:" + "ab" * 32, "file": "rootfs.tar"}
    (image / "metadata.json").write_text(json.dumps(meta))
    container = tmp_path / "lxc" / "c1"
    container.mkdir(parents=True)
    (container / "cman.json").write_text(json.dumps({"rootfs_lower": str(used)}))
    add_user(image, used, container)
    assert store.delete(meta) >= 10
    assert store.all() == [], "no image any more"
    assert used.is_dir() and not unused.exists() and not (image / "rootfs.tar").exists()
    assert (image / REMOVED_MARK).is_file()
    assert store.collect_orphans() == [], "its container still stands on it"
    (container / "cman.json").unlink()
    container.rmdir()
    assert store.collect_orphans() == [image]
    assert not image.exists()
