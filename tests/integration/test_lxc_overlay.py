"""Overlay rootfs on raw LXC, against real LXC: a container stands on its image's cached rootfs
(the lower layer) and writes only into its own upper layer; the image never changes, a removed
container leaves nothing, and an image cannot go from under its containers.

Runs in a private LXC path and image store (:mod:`.lxc_lab`); everything is removed in
teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cman.backends.lxc import rootfs
from cman.backends.lxc.tools import Paths
from cman.errors import CmanError

from ..conftest import ROOTFS
from .lxc_lab import Lxc, private_lxc

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def lx() -> Iterator[Lxc]:
    with private_lxc() as lab:
        yield lab


@pytest.fixture
def made(lx: Lxc) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(CmanError):
            lx.backend.remove(name, force=True)


def _digest(root: Path) -> str:
    """Names, owners, modes, link targets and contents of a tree."""
    h = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            path = os.path.join(folder, name)
            st = os.lstat(path)
            h.update(f"{os.path.relpath(path, root)} {st.st_mode} {st.st_uid} {st.st_gid}\n".encode())
            if os.path.islink(path):
                h.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                h.update(Path(path).read_bytes())
    return h.hexdigest()


def _layers(lx: Lxc, name: str) -> rootfs.Layers:
    return rootfs.layers(Paths(str(lx.lxcpath), name))


def test_writes_stay_in_the_container(lx: Lxc, made: list[str]) -> None:
    first, second = lx.name("writer"), lx.name("reader")
    made += [first, second]
    proc = lx.cli("run", "--name", first, lx.image, "sh", "-c",
                  "rm -rf /etc && mkdir /etc && echo mine > /etc/hostname && echo changed > /bin/marker"
                  " && rm -f /bin/ls && cat /etc/hostname")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "mine"
    layers = _layers(lx, first)
    assert layers.lower is not None and layers.upper == lx.lxcpath / first / "rootfs"
    before = _digest(layers.lower)
    assert not (layers.lower / "bin" / "marker").exists(), "the image's layer is untouched"
    assert (layers.lower / "bin" / "ls").exists()
    assert rootfs.read_file(layers, "bin/marker") == b"changed\n", "the merged view, read from the host"
    assert rootfs.stat_file(layers, "bin/ls") is None, "a whiteout hides the image's file"
    assert rootfs.read_file(layers, "etc/passwd") is None, "an opaque folder hides the image's folder"
    # a second container of the image sees the image, not the first one's changes
    proc = lx.cli("run", "--name", second, lx.image, "sh", "-c",
                  "test -e /bin/marker && echo marker; test -e /bin/ls && echo ls; test -s /etc/passwd && echo passwd")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ls", "passwd"]
    # the first one keeps its changes across a restart
    assert lx.cli("start", first).returncode == 0
    assert lx.backend.wait(first) == 0
    assert b"".join(c.data for c in lx.backend.logs(first) if c.stream == "stdout") == b"mine\nmine\n"
    assert _digest(layers.lower) == before


def test_removal_leaves_no_layer(lx: Lxc, made: list[str]) -> None:
    name = lx.name("gone")
    made.append(name)
    assert lx.cli("run", "--name", name, lx.image, "sh", "-c", "echo x > /root/file").returncode == 0
    upper = _layers(lx, name).upper
    assert (upper / "root" / "file").is_file()
    assert lx.cli("rm", name).returncode == 0
    assert not (lx.lxcpath / name).exists(), "the upper and work folders go with the container"
    # --rm: LXC destroys the container, overlay and all, when it stops
    rm = lx.name("rm")
    proc = lx.cli("run", "--rm", "--name", rm, lx.image, "sh", "-c", "echo y > /root/file; exit 3")
    assert proc.returncode == 3, proc.stderr
    assert not (lx.lxcpath / rm).exists()


def test_an_image_outlives_nothing_it_stands_under(lx: Lxc, made: list[str]) -> None:
    image = lx.name("img")
    assert lx.cli("image", "import", str(ROOTFS), image).returncode == 0
    image_id = json.loads(lx.cli("image", "inspect", image, "--json").stdout)["id"]
    folder = lx.images / str(image_id).removeprefix("sha256:")
    try:
        name = lx.name("user")
        made.append(name)
        assert lx.cli("run", "-d", "--name", name, image, "sleep", "300").returncode == 0
        lower = _layers(lx, name).lower
        assert lower is not None and lower.parent == folder
        refused = lx.cli("image", "rm", image)
        assert refused.returncode != 0 and name in refused.stderr, "in use: refused"
        assert lx.cli("image", "rm", "-f", image).returncode == 0
        assert image not in lx.cli("images").stdout, "the image itself is gone"
        assert not (folder / "metadata.json").exists()
        assert lower.is_dir(), "its layer stays while a container stands on it"
        # the container still runs and starts again on it
        assert lx.cli("exec", name, "cat", "/etc/hostname").returncode == 0
        assert lx.cli("stop", "-t", "0", name).returncode == 0
        assert lx.cli("start", name).returncode == 0
        assert lx.cli("exec", name, "ls", "/bin/busybox").returncode == 0
        # an image prune keeps it too; removing the last container removes it
        assert lx.cli("image", "prune").returncode == 0
        assert lower.is_dir()
        assert lx.cli("rm", "-f", name).returncode == 0
        assert not folder.exists(), "the removed image's folder goes with its last container"
    finally:
        lx.cli("image", "rm", "-f", image)


def test_an_ephemeral_container_on_a_removed_image_is_collected_by_prune(lx: Lxc, made: list[str]) -> None:
    image = lx.name("eph")
    assert lx.cli("image", "import", str(ROOTFS), image).returncode == 0
    image_id = json.loads(lx.cli("image", "inspect", image, "--json").stdout)["id"]
    folder = lx.images / str(image_id).removeprefix("sha256:")
    try:
        name = lx.name("eph")
        made.append(name)
        assert lx.cli("run", "-d", "--rm", "--name", name, image, "sleep", "300").returncode == 0
        assert lx.cli("image", "rm", "-f", image).returncode == 0
        assert folder.is_dir()
        assert lx.cli("stop", "-t", "0", name).returncode == 0  # LXC destroys it, not cman
        assert not (lx.lxcpath / name).exists()
        assert lx.cli("image", "prune").returncode == 0
        assert not folder.exists()
    finally:
        lx.cli("image", "rm", "-f", image)


def test_nesting_containers_keep_a_plain_rootfs(lx: Lxc, made: list[str]) -> None:
    """Docker inside (overlay2) cannot stack on an overlayfs rootfs."""
    name = lx.name("nest")
    made.append(name)
    proc = lx.cli("create", "--name", name, "--profile", "docker-host", lx.image)
    assert proc.returncode == 0, proc.stderr
    layers = _layers(lx, name)
    assert layers.lower is None
    assert (layers.upper / "bin" / "busybox").is_file(), "a copy of the image's rootfs"
