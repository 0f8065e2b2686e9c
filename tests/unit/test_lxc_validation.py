"""The LXC backend rejects bad names and config values BEFORE it runs any tool.

``_proc.run`` (the one subprocess gateway) and the streaming ``spawn`` are replaced by
functions that fail the test, so any call that slipped through would show up.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from cman._sys import proc as _proc
from cman.backends.lxc import LxcBackend, attach, config, connection, tools
from cman.backends.lxc import images as lxc_images
from cman.errors import ContainerNotFound, InvalidName, InvalidValue, UsageError
from cman.models import ContainerSpec, StdIO

BAD_NAMES = ["-leading-dash", "--help", "a\nb", "name\n", "a\0b", "has space", "x" * 65, "", ".hidden", "a/b"]
BAD_VALUES = ["two\nlines", "cr\rhere", "nul\0byte", "-starts-with-dash", "x\nlxc.hook.pre-start = /bin/evil"]


@pytest.fixture
def no_tools(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        pytest.fail(f"a tool ran before validation: {args!r}")

    monkeypatch.setattr(_proc, "run", forbidden)
    monkeypatch.setattr(attach, "spawn", forbidden)
    monkeypatch.setattr(attach.subprocess, "Popen", forbidden)
    return calls


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tools: list[Any]) -> LxcBackend:
    monkeypatch.setenv(tools.ENV_LXC_PATH, str(tmp_path / "lxc"))
    monkeypatch.setenv(tools.ENV_IMAGES, str(tmp_path / "images"))
    monkeypatch.setattr(connection.shutil, "which", lambda name: f"/usr/bin/{name}")
    (tmp_path / "lxc").mkdir()
    return LxcBackend()


def _fake_image(backend: LxcBackend, alias: str, lxc_config: list[list[str]] | None = None) -> None:
    root = backend.store.root / ("ab" * 32)
    root.mkdir(parents=True)
    (root / "rootfs.tar").write_bytes(b"")
    (root / "metadata.json").write_text(json.dumps({
        "id": "sha256:" + "ab" * 32, "sha256": "cd" * 32, "file": "rootfs.tar", "size": 0,
        "created": "2024-01-01T00:00:00+00:00", "aliases": [alias], "source": {"kind": "import"},
        "default_command": ["/bin/sh"], "lxc_config": lxc_config or [], "rootfs_prefix": "",
    }))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_container_names_rejected(backend: LxcBackend, name: str, no_tools: list[Any]) -> None:
    with pytest.raises(InvalidName):
        LxcBackend.validate_name(name)
    _fake_image(backend, "img")
    with pytest.raises(UsageError):
        backend.create(ContainerSpec(image="img", name=name, command=("true",)))
    assert not no_tools
    assert list((Path(backend.lxcpath)).iterdir()) == []


@pytest.mark.parametrize("name", ["-x", "a\nb"])
def test_bad_refs_are_not_found_without_a_tool_call(backend: LxcBackend, name: str) -> None:
    out = StdIO(None, io.BytesIO(), io.BytesIO())
    for call in (
        lambda: backend.start(name),
        lambda: backend.stop(name),
        lambda: backend.remove(name, force=True),
        lambda: backend.inspect(name),
        lambda: backend.init_pid(name),
        lambda: backend.exec(name, ["true"], out),
        lambda: list(backend.logs(name)),
    ):
        with pytest.raises(ContainerNotFound):
            call()


@pytest.mark.parametrize("value", [v for v in BAD_VALUES if "\0" not in v])  # the OS refuses NUL in env
def test_lxcpath_from_env_is_checked(monkeypatch: pytest.MonkeyPatch, value: str, no_tools: list[Any]) -> None:
    monkeypatch.setenv(tools.ENV_LXC_PATH, "/tmp/" + value if not value.startswith("-") else value)
    monkeypatch.setattr(connection.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(InvalidValue):
        LxcBackend()


def test_relative_lxcpath_is_refused(monkeypatch: pytest.MonkeyPatch, no_tools: list[Any]) -> None:
    monkeypatch.setenv(tools.ENV_LXC_PATH, "relative/path")
    with pytest.raises(InvalidValue, match="absolute"):
        tools.lxc_path_from_env()


@pytest.mark.parametrize("value", BAD_VALUES)
def test_image_ref_with_bad_value_rejected_before_create(backend: LxcBackend, value: str) -> None:
    with pytest.raises(UsageError):
        backend.create(ContainerSpec(image=value, name="cmantest-ok", command=("true",)))
    assert not (Path(backend.lxcpath) / "cmantest-ok").exists()


@pytest.mark.parametrize("value", BAD_VALUES)
def test_image_config_from_metadata_is_checked(backend: LxcBackend, value: str) -> None:
    """Values an image carries into the config (template settings) are checked too."""
    _fake_image(backend, "evil", [["lxc.mount.entry", value]])
    with pytest.raises(InvalidValue):
        backend.create(ContainerSpec(image="evil", name="cmantest-ok", command=("true",)))
    assert not (Path(backend.lxcpath) / "cmantest-ok").exists()


@pytest.mark.parametrize("value", BAD_VALUES)
def test_pull_and_import_names_checked(backend: LxcBackend, value: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        list(backend.pull(value))
    with pytest.raises(UsageError):
        list(backend.pull("template:" + value))
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(b"")
    with pytest.raises(UsageError):
        backend.image_import(tarball, value)


def test_download_server_value_checked(backend: LxcBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lxc_images.ENV_DOWNLOAD_SERVER, "mirror\nlxc.hook = x")
    with pytest.raises(InvalidValue):
        list(backend.pull("debian/bookworm"))


def test_download_without_server_fails_fast_without_a_tool(backend: LxcBackend,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lxc_images.ENV_DOWNLOAD_SERVER, raising=False)
    from cman.errors import ImageNotFound

    with pytest.raises(ImageNotFound, match="image server"):
        list(backend.pull("debian/bookworm/amd64"))


@pytest.mark.parametrize("key", ["A=B", "", "X\0"])
def test_bad_env_keys_rejected(backend: LxcBackend, key: str) -> None:
    _fake_image(backend, "img")
    with pytest.raises(InvalidValue):
        backend.create(ContainerSpec(image="img", name="cmantest-env", command=("true",), env={key: "v"}))
    assert not (Path(backend.lxcpath) / "cmantest-env").exists()


@pytest.mark.parametrize("value", BAD_VALUES)
def test_render_config_rejects_values(value: str) -> None:
    with pytest.raises(InvalidValue):
        config.render_config([("lxc.uts.name", value)])


@pytest.mark.parametrize("key", ["lxc.uts.name\nlxc.hook", "notlxc.key", "lxc..x", "lxc.UPPER"])
def test_render_config_rejects_keys(key: str) -> None:
    with pytest.raises(InvalidValue):
        config.render_config([(key, "value")])


def test_good_names_pass() -> None:
    for name in ["a", "cmantest-x", "web.1", "A_b-c.d", "x" * 64, "9lives"]:
        LxcBackend.validate_name(name)


@pytest.mark.parametrize("value", [" -x", "\t-x", "x ", " x", "a\x1cb", "a\x85b", "a\u2028b", "\udcff", "a\x1bb"])
def test_render_config_rejects_values_lxc_would_read_differently(value: str) -> None:
    """LXC trims blanks around a value and reads lines split at newlines only; the file is UTF-8."""
    with pytest.raises(InvalidValue):
        config.render_config([("lxc.uts.name", value)])


def test_config_is_read_back_as_lxc_reads_it(tmp_path: Path) -> None:
    text = config.render_config([("lxc.mount.entry", "a b\tc"), "note", ("lxc.signal.halt", "SIGUSR1")])
    path = tmp_path / "config"
    path.write_text(text + "  lxc.signal.halt =  SIGPWR \t\n# lxc.signal.halt = no\n")
    assert tools.config_values(path, ("lxc.mount.entry", "lxc.signal.halt")) == [
        ("lxc.mount.entry", "a b\tc"), ("lxc.signal.halt", "SIGUSR1"), ("lxc.signal.halt", "SIGPWR")]
