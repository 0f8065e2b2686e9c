"""Contexts without an engine: names, URLs and options each engine accepts, the store (modes,
atomic files, the current context), precedence, and the CLI's one-line errors."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from cman import backends, contexts
from cman.errors import CmanError, Conflict, ExitCode, InvalidName, InvalidValue, UsageError

from ..conftest import assert_clean_error, cli


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A config folder of the test's own, for the library and for the CLI."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "CMAN_CONTEXT": ""}
    monkeypatch.setenv("XDG_CONFIG_HOME", env["XDG_CONFIG_HOME"])
    monkeypatch.delenv("CMAN_CONTEXT", raising=False)
    return env


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("client.crt", "client.key", "server.crt"):
        (tmp_path / name).write_text("not checked here: LXD reads it\n")
        files[name] = str(tmp_path / name)
    return files


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["prod", "a", "web-1.eu_2", "A" * 63])
def test_good_names(name: str) -> None:
    assert contexts.check_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a/b", "a:b", "a b", "A" * 64, "all", "default", "é"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidName):
        contexts.check_name(name)


# -- each engine's endpoint rules ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375", "ssh://host",
                                 "ssh://user@host:2222"])
def test_docker_urls(url: str) -> None:
    settings = backends.context_settings("docker", url, {})
    assert settings == {"DOCKER_HOST": url, "DOCKER_TLS_VERIFY": "", "DOCKER_CERT_PATH": ""}


@pytest.mark.parametrize("url", ["http://host", "unix://relative.sock", "tcp://host", "tcp://host:99999",
                                 "ssh://", "ssh://host/path", "host:2375", "", "ssh://a b"])
def test_bad_docker_urls(url: str) -> None:
    with pytest.raises(InvalidValue):
        backends.context_settings("docker", url, {})


def test_docker_takes_no_options() -> None:
    with pytest.raises(InvalidValue, match="--cert"):
        backends.context_settings("docker", "ssh://h", {"cert": "/x"})


def test_lxd_https_needs_existing_cert_and_key(certs: dict[str, str]) -> None:
    opts = {"cert": certs["client.crt"], "key": certs["client.key"]}
    settings = backends.context_settings("lxd", "https://10.0.0.5", opts)
    assert settings["CMAN_LXD_ENDPOINT"] == "https://10.0.0.5:8443"
    assert settings["CMAN_LXD_CERT"] == certs["client.crt"] and settings["CMAN_LXD_VERIFY"] == ""
    pinned = backends.context_settings("lxd", "https://h:9443", {**opts, "verify": certs["server.crt"]})
    assert pinned["CMAN_LXD_VERIFY"] == certs["server.crt"]
    assert backends.context_settings("lxd", "https://h:9443", {**opts, "verify": "false"})["CMAN_LXD_VERIFY"] == "false"
    with pytest.raises(InvalidValue, match="needs --cert and --key"):
        backends.context_settings("lxd", "https://h", {"cert": certs["client.crt"]})
    with pytest.raises(InvalidValue, match="no such file"):
        backends.context_settings("lxd", "https://h", {**opts, "key": "/nonexistent/key"})
    with pytest.raises(InvalidValue, match="no such file"):
        backends.context_settings("lxd", "https://h", {**opts, "verify": "/nonexistent/server.crt"})


@pytest.mark.parametrize("url", ["http://h:8443", "https://", "https://h/x", "https://u@h", "h:8443"])
def test_bad_lxd_urls(url: str, certs: dict[str, str]) -> None:
    with pytest.raises(InvalidValue):
        backends.context_settings("lxd", url, {"cert": certs["client.crt"], "key": certs["client.key"]})


def test_lxd_unix_socket_is_an_lxd_dir() -> None:
    settings = backends.context_settings("lxd", "unix:///var/lib/lxd/unix.socket", {})
    assert settings["LXD_DIR"] == "/var/lib/lxd" and settings["CMAN_LXD_ENDPOINT"] == ""
    with pytest.raises(InvalidValue):
        backends.context_settings("lxd", "unix:///var/lib/lxd/other.sock", {})


def test_lxc_path() -> None:
    assert backends.context_settings("lxc", None, {}) == {"CMAN_LXC_PATH": "/var/lib/lxc"}
    assert backends.context_settings("lxc", None, {"lxcpath": "/srv/lxc/"}) == {"CMAN_LXC_PATH": "/srv/lxc"}
    for bad in ("relative", "/a\nb", "-x"):
        with pytest.raises(InvalidValue):
            backends.context_settings("lxc", None, {"lxcpath": bad})
    with pytest.raises(InvalidValue):
        backends.context_settings("lxc", "https://x", {})


# -- the store ----------------------------------------------------------------------------------


def test_store_round_trip_and_modes(home: dict[str, str], certs: dict[str, str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative certificate path is stored absolute
    made = contexts.create("edge", "lxd", "https://h", {"cert": "client.crt", "key": certs["client.key"]})
    assert made.options["cert"] == certs["client.crt"]
    path = contexts.store_dir() / "edge.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert contexts.load("edge") == made
    assert contexts.names() == ["edge"]
    with pytest.raises(Conflict):
        contexts.create("edge", "lxc", None, {})
    contexts.use("edge")
    assert contexts.current() == "edge" and (contexts.store_dir() / "current").stat().st_mode & 0o777 == 0o600
    contexts.remove("edge")
    assert contexts.current() is None and contexts.names() == []
    assert not list(contexts.store_dir().glob(".*tmp"))  # atomic writes leave no temporary file


def test_group_or_world_writable_files_are_refused(home: dict[str, str]) -> None:
    contexts.create("box", "lxc", None, {})
    path = contexts.store_dir() / "box.json"
    path.chmod(0o620)
    with pytest.raises(InvalidValue, match="chmod go-w"):
        contexts.load("box")
    path.chmod(0o600)
    contexts.store_dir().chmod(0o777)
    with pytest.raises(InvalidValue, match="contexts folder"):
        contexts.load("box")
    contexts.store_dir().chmod(0o700)
    assert contexts.load("box").backend == "lxc"


def test_a_file_that_lost_its_certificate_is_a_clear_error(home: dict[str, str], certs: dict[str, str]) -> None:
    contexts.create("gone", "lxd", "https://h", {"cert": certs["client.crt"], "key": certs["client.key"]})
    os.unlink(certs["client.key"])
    with pytest.raises(UsageError, match="context gone: invalid --key"):
        contexts.load("gone")


@pytest.mark.parametrize("content", ["not json", "[]", '{"backend": 3}', '{"backend": "docker", "url": 1}',
                                     '{"backend": "nosuch", "url": null}'])
def test_malformed_files(home: dict[str, str], content: str) -> None:
    contexts.store_dir().mkdir(parents=True, mode=0o700)
    path = contexts.store_dir() / "bad.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(UsageError):
        contexts.load("bad")


def test_precedence(home: dict[str, str]) -> None:
    contexts.create("a", "lxc", None, {})
    assert contexts.selected(None) == (None, "cman context use")
    contexts.use("a")
    assert contexts.selected(None)[0] == "a"
    assert contexts.selected(None, {**os.environ, "CMAN_CONTEXT": "b"}) == ("b", "$CMAN_CONTEXT")
    assert contexts.selected("c", {**os.environ, "CMAN_CONTEXT": "b"}) == ("c", "--context")
    assert contexts.selected("default")[0] is None
    contexts.use("default")
    assert contexts.selected(None)[0] is None


def test_bound_settings_are_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///env.sock")
    seen: dict[str, str | None] = {}

    def other() -> None:
        seen["other"] = backends.setting("DOCKER_HOST")

    with backends.bound({"DOCKER_HOST": "ssh://far", "DOCKER_CERT_PATH": ""}):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        seen["here"] = backends.setting("DOCKER_HOST")
        seen["empty"] = backends.setting("DOCKER_CERT_PATH")
    seen["after"] = backends.setting("DOCKER_HOST")
    assert seen == {"other": "unix:///env.sock", "here": "ssh://far", "empty": None, "after": "unix:///env.sock"}


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_round_trip(home: dict[str, str], certs: dict[str, str]) -> None:
    made = cli("context", "create", "far", "--lxd", "https://10.9.9.9:8443", "--cert", certs["client.crt"],
               "--key", certs["client.key"], "--verify", "false", env=home)
    assert made.returncode == 0 and made.stdout == "far\n", made.stderr
    assert cli("context", "create", "box", "--lxc", "--lxcpath", "/srv/lxc", env=home).returncode == 0
    listed = json.loads(cli("context", "ls", "--json", env=home).stdout)
    assert [(c["name"], c["backend"], c["current"]) for c in listed] == [
        ("default", None, True), ("box", "lxc", False), ("far", "lxd", False)]
    table = cli("context", "ls", env=home).stdout.splitlines()
    assert table[0].split() == ["NAME", "BACKEND", "ENDPOINT"] and table[1].startswith("default *")
    assert cli("context", "use", "far", env=home).returncode == 0
    inspected = json.loads(cli("context", "inspect", "far", "--json", env=home).stdout)
    assert inspected["current"] is True and inspected["endpoint"] == "https://10.9.9.9:8443"
    assert inspected["settings"]["CMAN_LXD_VERIFY"] == "false"
    text = cli("context", "inspect", "box", env=home).stdout
    assert "backend:  lxc" in text and "setting:  CMAN_LXC_PATH=/srv/lxc" in text
    assert [c["name"] for c in json.loads(cli("context", "ls", "--json", env=home).stdout) if c["current"]] == ["far"]
    assert cli("context", "rm", "far", "box", env=home).stdout == "far\nbox\n"
    listed = json.loads(cli("context", "ls", "--json", env=home).stdout)
    assert [(c["name"], c["current"]) for c in listed] == [("default", True)]


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("create", "-bad", "--lxc"), 2, ""),  # click reads it as an option: its own usage error
    (("create", "a/b", "--lxc"), 2, "invalid context name"),
    (("create", "all", "--lxc"), 2, "reserved"),
    (("create", "default", "--lxc"), 2, "reserved"),
    (("create", "x" * 64, "--lxc"), 2, "invalid context name"),
    (("create", "two", "--docker", "unix:///a.sock", "--lxc"), 2, "exactly one engine"),
    (("create", "none"), 2, "exactly one engine"),
    (("create", "scheme", "--docker", "http://h:1"), 2, "unix://, tcp:// or ssh://"),
    (("create", "scheme", "--lxd", "http://h:8443", "--cert", "/etc/hostname", "--key", "/etc/hostname"), 2,
     "https://"),
    (("create", "nocert", "--lxd", "https://h", "--cert", "/nonexistent.crt", "--key", "/etc/hostname"), 2,
     "no such file"),
    (("create", "opt", "--docker", "ssh://h", "--lxcpath", "/x"), 2, "takes only its URL"),
    (("inspect", "nope"), 3, "no such context"),
    (("rm", "nope"), 3, "no such context"),
    (("use", "nope"), 3, "no such context"),
])
def test_cli_bad_input(home: dict[str, str], args: tuple[str, ...], code: int, needle: str) -> None:
    proc = cli("context", *args, env=home)
    if needle:
        assert_clean_error(proc, code, needle)
    else:
        assert proc.returncode == code and "Traceback" not in proc.stderr


def test_cli_duplicate_is_a_conflict(home: dict[str, str]) -> None:
    assert cli("context", "create", "twice", "--lxc", env=home).returncode == 0
    assert_clean_error(cli("context", "create", "twice", "--lxc", env=home), int(ExitCode.CONFLICT), "already exists")


def test_unknown_context_in_option_and_env(home: dict[str, str]) -> None:
    assert_clean_error(cli("--context", "nope", "ps", env=home), 3, "no such context: nope (from --context)")
    assert_clean_error(cli("ps", env={**home, "CMAN_CONTEXT": "nope"}), 3, "from $CMAN_CONTEXT")
    assert_clean_error(cli("--context", "all", "ps", env=home), 2, "no context is stored")


def test_cli_insecure_mode(home: dict[str, str]) -> None:
    assert cli("context", "create", "box", "--lxc", env=home).returncode == 0
    path = Path(home["XDG_CONFIG_HOME"]) / "cman" / "contexts" / "box.json"
    path.chmod(0o666)
    assert_clean_error(cli("--context", "box", "ps", env=home), 2, "group or others may write it")
    assert_clean_error(cli("context", "inspect", "box", env=home), 2, "chmod go-w")


def test_backend_must_match_the_context(home: dict[str, str]) -> None:
    assert cli("context", "create", "box", "--lxc", env=home).returncode == 0
    assert_clean_error(cli("--context", "box", "ps", backend="docker", env=home), 2, "does not match context box")


def test_context_all_only_for_listings(home: dict[str, str]) -> None:
    assert cli("context", "create", "box", "--lxc", env=home).returncode == 0
    assert_clean_error(cli("--context", "all", "stop", "x", env=home), 2, "--context all works with ps")


def test_ps_without_contexts_imports_nothing_new(home: dict[str, str]) -> None:
    import subprocess
    import sys

    code = ("import sys; from cman.cli import main; main(['--help']); "
            "print(sorted(m for m in ('cman.contexts', 'contextvars', 'concurrent.futures', 'http.client') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **home})
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stderr


def test_errors_are_cman_errors() -> None:
    assert issubclass(contexts.ContextNotFound, CmanError)
