"""An image's config on import (Docker's Dockerfile changes), User resolved through a tarball,
and the exec wrapper of system containers: pure parts, no engine."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from cman.backends.docker.imports import changes
from cman.errors import InvalidValue
from cman.models import ImageConfig
from cman.oci import imageconfig


def test_changes_without_config_is_the_import_default() -> None:
    assert changes(None) == 'CMD ["/bin/sh"]'
    assert changes(ImageConfig()) == ""


def test_changes_quote_every_value() -> None:
    config = ImageConfig(entrypoint=("/bin/sh", "-c", 'echo "$A"'), cmd=("one", "ü"),
                         env=('A=v "q" $HOME \\ b', "B="), workdir="/srv/a b$x", user="name:grp")
    lines = changes(config).split("\n")
    assert lines == [
        'ENTRYPOINT ["/bin/sh", "-c", "echo \\"$A\\""]',
        'CMD ["one", "\\u00fc"]',
        'ENV A="v \\"q\\" \\$HOME \\\\ b"',
        'ENV B=""',
        'WORKDIR "/srv/a b\\$x"',
        'USER "name:grp"',
    ]


@pytest.mark.parametrize("config", [
    ImageConfig(env=("A=one\nCMD [\"x\"]",)),
    ImageConfig(env=("NOEQUALS",)),
    ImageConfig(env=("A B=1",)),
    ImageConfig(env=("$A=1",)),
    ImageConfig(env=("-A=1",)),
    ImageConfig(cmd=("a\rb",)),
    ImageConfig(workdir="/a\nUSER root"),
    ImageConfig(workdir="-w"),
    ImageConfig(user="-1"),
    ImageConfig(user="a\tb"),
])
def test_changes_refuse_what_would_break_a_line(config: ImageConfig) -> None:
    with pytest.raises(InvalidValue):
        changes(config)


def _tarball(path: Path, files: dict[str, bytes], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/host/etc/passwd"
            tar.addfile(info)
    return path


PASSWD = b"root:x:0:0::/root:/bin/sh\napp:x:1234:2345::/srv:/bin/sh\n"
GROUP = b"root:x:0:\nstaff:x:50:\n"


def test_resolve_in_tarball(tmp_path: Path) -> None:
    tar = _tarball(tmp_path / "r.tar.gz", {"./etc/passwd": PASSWD, "./etc/group": GROUP})
    got = imageconfig.resolve_in_tarball(ImageConfig(user="app:staff"), tar)
    assert (got.uid, got.gid) == (1234, 50)
    unified = _tarball(tmp_path / "u.tar.gz", {"rootfs/etc/passwd": PASSWD, "metadata.yaml": b"{}"})
    assert imageconfig.resolve_in_tarball(ImageConfig(user="app"), unified).uid == 1234
    done = ImageConfig(user="app", uid=7, gid=8)
    assert imageconfig.resolve_in_tarball(done, tar) is done, "already resolved: not read again"


def test_resolve_in_tarball_refuses(tmp_path: Path) -> None:
    linked = _tarball(tmp_path / "l.tar.gz", {}, symlink="etc/passwd")
    with pytest.raises(InvalidValue, match="no user"):
        imageconfig.resolve_in_tarball(ImageConfig(user="app"), linked)  # a symlink is not followed
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(InvalidValue, match="cannot read"):
        imageconfig.resolve_in_tarball(ImageConfig(user="app"), bad)


def test_exec_label_and_argv() -> None:
    assert imageconfig.exec_label(None) is None
    assert imageconfig.exec_label(ImageConfig(cmd=("x",), uid=0, gid=0)) is None, "root, no workdir: nothing"
    label = imageconfig.exec_label(ImageConfig(workdir="/srv", user="app", uid=1234, gid=2345))
    assert label is not None and "\n" not in label
    argv = imageconfig.exec_argv(label, ["id", "-u"])
    assert argv == ("/bin/sh", "-c", imageconfig.JOB_PREFIX, imageconfig.JOB_PREFIX_ARGV0,
                    "/srv", "1234", "2345", "app", "id", "-u")
    assert imageconfig.exec_argv(None, ["pwd"]) == ("pwd",)


@pytest.mark.parametrize("label", ["", "not json", "[]", '{"workdir": 1, "uid": 0, "gid": 0, "user": ""}',
                                   '{"workdir": "/", "uid": -1, "gid": 0, "user": ""}',
                                   '{"workdir": "/", "uid": true, "gid": 0, "user": ""}',
                                   '{"workdir": "/\\u0000", "uid": 1, "gid": 0, "user": ""}'])
def test_exec_argv_ignores_a_label_not_of_cman(label: str) -> None:
    assert imageconfig.exec_argv(label, ["pwd"]) == ("pwd",)


def test_exec_wrapper_runs_in_workdir(tmp_path: Path) -> None:
    """The wrapper with root's ids (no setpriv needed): cd, then the command, its code kept."""
    label = json.dumps({"workdir": str(tmp_path), "uid": 0, "gid": 0, "user": ""})
    argv = imageconfig.exec_argv(label, ["sh", "-c", "pwd; exit 3"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert (done.returncode, done.stdout.strip()) == (3, str(tmp_path))
    missing = imageconfig.exec_argv(json.dumps({"workdir": str(tmp_path / "no"), "uid": 0, "gid": 0, "user": ""}),
                                    ["true"])
    assert subprocess.run(missing, capture_output=True, timeout=10).returncode == 125


def test_follow_image_config_remembers_workdir_and_user_for_exec() -> None:
    from typing import ClassVar

    from cman import lifecycle
    from cman.models import ContainerSpec, Image

    from .fake_backend import FakeBackend

    class System(FakeBackend):
        system_containers: ClassVar[bool] = True

    stored = imageconfig.stored(ImageConfig(cmd=("sleep", "9"), workdir="/srv", user="app", uid=5, gid=6))
    image = Image("lxc", "id", ("img",), extra=imageconfig.image_extra(stored))
    spec = lifecycle.follow_image_config(System(), ContainerSpec("img", labels={"a": "b"}), image)
    assert spec.command[-2:] == ("sleep", "9")
    label = spec.labels[imageconfig.EXEC_LABEL]
    assert spec.labels["a"] == "b" and json.loads(label) == {"workdir": "/srv", "uid": 5, "gid": 6, "user": "app"}
    plain = lifecycle.follow_image_config(System(), ContainerSpec("img"), Image("lxc", "id", ("img",)))
    assert imageconfig.EXEC_LABEL not in plain.labels
    docker = lifecycle.follow_image_config(FakeBackend(), ContainerSpec("img"), image)
    assert docker == ContainerSpec("img"), "Docker follows its images itself"
