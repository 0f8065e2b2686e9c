"""Pure parsing of OCI pulls: references, cman's config file, image configs and users."""

from __future__ import annotations

from pathlib import Path

import pytest

from cman import config
from cman.errors import InvalidName, InvalidValue
from cman.models import ImageConfig
from cman.oci import imageconfig, layout
from cman.oci.refs import parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("ref", "registry", "repo", "tag", "digest"), [
    ("debian", "docker.io", "library/debian", "latest", None),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
    ("foo/bar", "docker.io", "foo/bar", "latest", None),
    ("index.docker.io/debian", "docker.io", "library/debian", "latest", None),
    ("127.0.0.1:5000/cman/configured:extra", "127.0.0.1:5000", "cman/configured", "extra", None),
    ("localhost/x", "localhost", "x", "latest", None),
    ("reg.example/a/b/c:v1", "reg.example", "a/b/c", "v1", None),
    (f"debian@{DIGEST}", "docker.io", "library/debian", None, DIGEST),
    (f"r.io/x:1@{DIGEST}", "r.io", "x", "1", DIGEST),
])
def test_reference_normalised_as_docker_does(ref: str, registry: str, repo: str, tag: str | None,
                                             digest: str | None) -> None:
    got = parse(ref)
    assert (got.registry, got.repository, got.tag, got.digest) == (registry, repo, tag, digest)


def test_canonical_and_mirror() -> None:
    ref = parse("busybox:1.36")
    assert ref.canonical == "docker.io/library/busybox:1.36"
    assert ref.on("127.0.0.1:5000").remote == "127.0.0.1:5000/library/busybox:1.36"
    assert not ref.explicit_registry and parse("a.b/c").explicit_registry


@pytest.mark.parametrize("ref", [
    "", "UPPER/repo", "Debian", "repo:", "repo@sha256:xyz", f"repo@md5:{'a' * 64}", "127.0.0.1:99999/x",
    "127.0.0.1:0/x", "-x", "a//b", "a/b/", ":tag", "repo:-bad", "repo:" + "t" * 129, "a" * 256, "a b", "x/..",
    "reg:port/x", "http://reg/x", f"repo@sha256:{'A' * 64}",
])
def test_bad_references_are_invalid_name(ref: str) -> None:
    with pytest.raises(InvalidName):
        parse(ref)


def test_config_files_and_env(tmp_path: Path) -> None:
    system = tmp_path / "etc.toml"
    system.write_text('registry_mirrors = ["https://mirror.example"]\ninsecure_registries = ["10.0.0.5:5000"]\n')
    user = tmp_path / "xdg" / "cman" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('registry_mirrors = ["http://127.0.0.1:5000/"]\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    cfg = config.load(env, system_file=system)
    assert [m.url for m in cfg.registry_mirrors] == ["http://127.0.0.1:5000"]
    assert cfg.insecure_registries == ("10.0.0.5:5000",)
    assert cfg.insecure("10.0.0.5:5000") and cfg.insecure("127.0.0.1:5000") and cfg.insecure("localhost")
    assert not cfg.insecure("reg.example")
    cfg = config.load({**env, config.ENV_MIRROR: "http://a.example:5000,https://b.example"}, system_file=system)
    assert [m.host for m in cfg.registry_mirrors] == ["a.example:5000", "b.example"]
    assert cfg.insecure("a.example:5000") and not cfg.insecure("b.example")
    assert config.load({"HOME": str(tmp_path / "none")}, system_file=tmp_path / "missing").registry_mirrors == ()


@pytest.mark.parametrize("text", [
    "registry_mirrors = 1", 'registry_mirrors = ["ftp://x"]', 'registry_mirrors = ["http://x/path"]',
    'registry_mirrors = ["http://x:70000"]', 'insecure_registries = ["-x"]', 'unknown = 1', "not toml [",
    'insecure_registries = ["a\\nb"]',
])
def test_bad_config_is_invalid_value(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(InvalidValue):
        config.load({"HOME": str(tmp_path / "h")}, system_file=path)


def test_bad_mirror_env() -> None:
    with pytest.raises(InvalidValue, match="CMAN_REGISTRY_MIRROR"):
        config.load({config.ENV_MIRROR: "127.0.0.1:5000", "HOME": "/nonexistent"}, system_file=Path("/nonexistent"))


def test_auth_file_order(tmp_path: Path) -> None:
    docker = tmp_path / ".docker" / "config.json"
    docker.parent.mkdir()
    docker.write_text("{}")
    assert config.auth_file({"HOME": str(tmp_path)}) == docker
    mine = tmp_path / "auth.json"
    mine.write_text("{}")
    assert config.auth_file({"HOME": str(tmp_path), "REGISTRY_AUTH_FILE": str(mine)}) == mine


PASSWD = "root:x:0:0::/root:/bin/sh\n# comment\napp:x:1234:2345::/srv:/bin/sh\nbad:x:notanumber:1::/:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:\napps:x:2345:\n"


@pytest.mark.parametrize(("user", "ids"), [
    ("", (0, 0)), ("root", (0, 0)), ("app", (1234, 2345)), ("1234", (1234, 2345)), ("999", (999, 0)),
    ("app:staff", (1234, 50)), ("app:7", (1234, 7)), ("999:8", (999, 8)), ("1234:apps", (1234, 2345)),
])
def test_user_resolution(user: str, ids: tuple[int, int]) -> None:
    assert imageconfig.resolve_user(user, PASSWD, GROUP) == ids


@pytest.mark.parametrize("user", ["nobody", "app:nogroup", "bad", "99999999999"])
def test_unresolvable_user(user: str) -> None:
    with pytest.raises(InvalidValue):
        imageconfig.resolve_user(user, PASSWD, GROUP)


def test_resolve_reads_beneath_rootfs_only(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").symlink_to("/etc/group")  # not followed out of the rootfs
    got = imageconfig.resolve(ImageConfig(user="app"), tmp_path)
    assert (got.uid, got.gid) == (1234, 2345)
    with pytest.raises(InvalidValue):
        imageconfig.resolve(ImageConfig(user="app:root"), tmp_path)


def test_config_blob_and_job() -> None:
    cfg = imageconfig.from_blob({"config": {"Entrypoint": ["/e"], "Cmd": ["a"], "Env": ["A=1", "B=2"],
                                            "WorkingDir": "/w", "User": "app"}})
    assert cfg.entrypoint == ("/e",) and cfg.cmd == ("a",) and cfg.workdir == "/w"
    argv, env = imageconfig.job(cfg, (), {"B": "3"})
    assert env == {"A": "1", "B": "3"}
    assert argv[:2] == ("/bin/sh", "-c") and argv[3:] == ("cman-oci", "/w", "", "0", "app", "/e", "a")
    resolved = ImageConfig(entrypoint=("/e",), cmd=("a",), uid=5, gid=6, user="5:6")
    argv, _ = imageconfig.job(resolved, ("x",), {})
    assert argv[3:] == ("cman-oci", "", "5", "6", "", "/e", "x")
    assert imageconfig.job(ImageConfig(cmd=("true",)), (), {}) == (("true",), {})
    assert imageconfig.job(None, ("x",), {"K": "v"}) == (("x",), {"K": "v"})
    back = imageconfig.from_extra(imageconfig.stored(resolved))
    assert back == resolved
    assert imageconfig.image_extra("not json") == {} and imageconfig.image_extra(None) == {}


@pytest.mark.parametrize("blob", [{"config": []}, {"config": {"Cmd": "sh"}}, {"config": {"Env": [1]}},
                                  {"config": {"User": 5}}])
def test_bad_config_blob(blob: dict[str, object]) -> None:
    with pytest.raises(InvalidValue):
        imageconfig.from_blob(blob)


def test_tag_key_and_sources() -> None:
    key = layout.tag_key(parse("127.0.0.1:5000/a:b"))
    assert key.startswith("cman-") and len(key) == 45 and key == layout.tag_key(parse("127.0.0.1:5000/a:b"))
    mirrors = config.Config(registry_mirrors=(config.parse_mirror("http://m:5000", "t"),))
    assert [s.remote for s in layout.sources(parse("debian"), mirrors)] == ["m:5000/library/debian:latest"]
    assert [s.remote for s in layout.sources(parse("r.io/x"), mirrors)] == ["r.io/x:latest"]
    assert [s.remote for s in layout.sources(parse("debian"), config.Config())] == ["docker.io/library/debian:latest"]


def test_init_added_only_when_missing(tmp_path: Path) -> None:
    (tmp_path / "usr" / "sbin").mkdir(parents=True)
    (tmp_path / "sbin").symlink_to("usr/sbin")
    assert layout.add_init(tmp_path)
    assert (tmp_path / "usr" / "sbin" / "init").read_bytes() == layout.INIT_SCRIPT
    assert not layout.add_init(tmp_path)
