"""Profiles without an engine: the shipped files, precedence, merge rules, validation, the allowlist,
flags over profiles, and each backend's form of nesting and raw keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cman.backends
from cman import profiles
from cman.cli import main
from cman.cli.containers import _spec
from cman.errors import ExitCode, InvalidProfile, InvalidValue, ProfileNotFound, Unsupported, UsageError
from cman.models import ContainerSpec
from cman.profiles import allow
from cman.profiles.schema import Profile, merge, parse

from .fake_backend import FakeBackend

REPO = Path(__file__).resolve().parents[2]


def _dirs(tmp_path: Path) -> tuple[dict[str, str], Path, Path, Path]:
    """(env, user dir, system dir, shipped dir), all empty folders under tmp_path."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    user, system, shipped = tmp_path / "xdg" / "cman" / "profiles", tmp_path / "etc", tmp_path / "shipped"
    for d in (user, system, shipped):
        d.mkdir(parents=True)
    return env, user, system, shipped


def _parse(text: str, name: str = "p") -> Profile:
    import tomllib

    return parse(name, tomllib.loads(text), f"/x/{name}.toml")


def _refused(text: str, *needles: str) -> str:
    with pytest.raises(InvalidProfile) as info:
        _parse(text)
    message = str(info.value)
    assert info.value.exit_code == ExitCode.USAGE
    assert "\n" not in message and message.startswith("profile /x/p.toml: "), message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# -- the shipped profiles ------------------------------------------------------------------------


def test_shipped_profiles_parse_and_are_linked_from_the_top_level_folder() -> None:
    names = {p.name for p in profiles.available(env={"XDG_CONFIG_HOME": "/nonexistent"},
                                                 system_dir=Path("/nonexistent"))}
    assert {"default", "isolated", "docker-host"} <= names
    for name in ("default", "isolated", "docker-host"):
        link = REPO / "profiles" / f"{name}.toml"
        assert link.resolve() == (profiles.SHIPPED_DIR / f"{name}.toml").resolve()


def test_docker_host_and_isolated_say_what_the_issue_asks() -> None:
    env = {"XDG_CONFIG_HOME": "/nonexistent"}
    host = profiles.load("docker-host", env, system_dir=Path("/nonexistent"))
    assert host.nesting is True and not host.privileged
    assert host.extras("pve") == {"features": "nesting=1,keyctl=1", "unprivileged": "1"}
    assert host.extras("docker") == {}
    iso = profiles.load("isolated", env, system_dir=Path("/nonexistent"))
    assert iso.network and iso.icc is False and iso.cpus == 1.0 and iso.memory == 512 * 1024**2


def test_package_data_ships_the_toml_files() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert '"profiles/*.toml"' in text


# -- precedence ----------------------------------------------------------------------------------


def test_user_over_system_over_shipped(tmp_path: Path) -> None:
    env, user, system, shipped = _dirs(tmp_path)
    (shipped / "web.toml").write_text('description = "shipped"\ncpus = 1\n')
    (system / "web.toml").write_text('description = "system"\ncpus = 2\n')
    kw = {"system_dir": system, "shipped_dir": shipped}
    assert profiles.load("web", env, **kw).cpus == 2  # type: ignore[arg-type]
    (user / "web.toml").write_text('description = "user"\n')
    p = profiles.load("web", env, **kw)  # type: ignore[arg-type]
    assert p.description == "user" and p.cpus is None, "a whole file wins, never merged across folders"
    [info] = profiles.available(env, **kw)  # type: ignore[arg-type]
    assert info.origin == "user" and info.shadows == (str(system / "web.toml"), str(shipped / "web.toml"))


def test_missing_profile_and_bad_names(tmp_path: Path) -> None:
    env, _, system, shipped = _dirs(tmp_path)
    with pytest.raises(ProfileNotFound) as info:
        profiles.load("nope", env, system_dir=system, shipped_dir=shipped)
    assert info.value.exit_code == ExitCode.NOT_FOUND and str(system) in str(info.value)
    for bad in ("../etc/passwd", "a/b", "", "UPPER", "-x", "x" * 64):
        with pytest.raises(UsageError):
            profiles.load(bad, env, system_dir=system, shipped_dir=shipped)


def test_broken_file_is_one_line_naming_it(tmp_path: Path) -> None:
    env, user, system, shipped = _dirs(tmp_path)
    (user / "bad.toml").write_text("cpus = [\n")
    with pytest.raises(InvalidProfile) as info:
        profiles.available(env, system_dir=system, shipped_dir=shipped)
    assert str(user / "bad.toml") in str(info.value) and "not valid TOML" in str(info.value)


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "needles"), [
    ("color = 1", ("color", "unknown key")),
    ("mounts = []", ("mounts", "unknown key")),
    ("cpus = true", ("cpus", "number")),
    ('cpus = "lots"', ("cpus", "decimal number")),
    ("cpus = 5000", ("cpus", "between")),
    ('memory = "5x"', ("memory", "unit")),
    ("memory = [1]", ("memory", "size")),
    ('nesting = "yes"', ("nesting", "true or false")),
    ('network = "bad name!"', ("network name",)),
    ('network = "n"\nicc = 1', ("icc", "true or false")),
    ("icc = false", ("icc", "network")),
    ('[dns]\nservers = ["dns.example"]', ("dns.servers", "IP address")),
    ('[dns]\nsearch = ["-bad"]', ("dns.search",)),
    ("[dns]\nport = 53", ("dns.port", "unknown key")),
    ('env = "A=1"', ("env", "table")),
    ("[env]\nA = 1", ("env.A", "string")),
    ('[env]\nA = "x\\nlxc.hook.start = /bin/evil"', ("env.A", "newline")),
    ('[labels]\n"cman.managed" = "false"', ("cman.managed", "cman's own")),
    ('[labels]\nk = "x\\ny"', ("newline",)),
    ('description = "two\\nlines"', ("description", "one line")),
])
def test_bad_values_name_the_file_the_key_and_the_reason(text: str, needles: tuple[str, ...]) -> None:
    _refused(text, *needles)


@pytest.mark.parametrize(("text", "needles"), [
    ('[lxc]\n"lxc.include" = "/etc/shadow"', ("lxc.include", "never from a profile")),
    ('[lxc]\n"lxc.hook.start" = "/bin/evil"', ("lxc.hook.start", "never", "host")),
    ('[lxc]\n"lxc.hook.pre-start" = "/bin/evil"', ("lxc.hook.pre-start", "never")),
    ('[lxc]\n"lxc.log.file" = "/etc/passwd"', ("lxc.log.file", "never")),
    ('[lxc]\n"lxc.idmap" = "u 0 0 65536"', ("lxc.idmap", "never")),
    ('[lxc]\n"lxc.apparmor.profile" = "unconfined"', ("lxc.apparmor.profile", "never")),
    ('[lxc]\n"lxc.cgroup.devices.allow" = "a"', ("devices", "never")),
    ('[lxc]\n"lxc.cap.keep" = "sys_admin"', ("lxc.cap.keep", "not on the allowlist")),
    ('[lxc]\n"lxc.cap.drop" = ""', ("must not be empty",)),
    ('[lxc]\n"lxc.cgroup.memory" = "1"', ("not on the allowlist",)),
    ('[lxc]\n"lxc.prlimit.nofile" = "1024\\nlxc.include = /x"', ("newlines",)),
    ('[lxc]\n"lxc.prlimit.nofile" = "-1"', ("start with '-'",)),
    ('[lxc]\n"lxc.prlimit.nofile" = " 10"', ("blanks",)),
    ('[lxc]\n"lxc.prlimit.nofile" = 1.5', ("string, an integer or a boolean",)),
    ('[lxd]\n"raw.lxc" = "lxc.include = /x"', ("raw.lxc", "never")),
    ('[lxd]\n"raw.idmap" = "both 0 0"', ("raw.idmap", "never")),
    ('[lxd]\n"security.privileged" = true', ("security.privileged", "privileged = true")),
    ('[lxd]\n"security.idmap.isolated" = true', ("never",)),
    ('[lxd]\n"linux.kernel_modules" = "overlay"', ("not on the allowlist",)),
    ('[lxd]\n"environment.X" = "1"', ("use `env`",)),
    ('[lxd]\nlimits = "x"', ("not on the allowlist",)),
    ('[pve]\nfeatures = "nesting=1,keyctl=yes"', ("keyctl must be 0 or 1",)),
    ('[pve]\nfeatures = "nesting=1,evil=1"', ("unknown feature",)),
    ('[pve]\nunprivileged = 2', ("0 or 1",)),
    ('[pve]\nhookscript = "local:snippets/x"', ("not on the allowlist",)),
    ('[docker]\nx = 1', ("docker", "unknown key")),
])
def test_the_allowlist_refuses_what_could_undo_confinement(text: str, needles: tuple[str, ...]) -> None:
    _refused(text, *needles)


def test_allowlisted_keys_pass_in_dotted_and_quoted_form() -> None:
    p = _parse('[lxd]\nsecurity.nesting = true\n"limits.processes" = 500\nlimits.cpu.allowance = "50%"\n'
               '[lxc]\n"lxc.prlimit.nofile" = 4096\nlxc.cap.drop = "sys_admin"\nlxc.start.auto = true\n'
               '[pve]\nfeatures = "nesting=1,keyctl=1,mount=nfs;cifs"\nunprivileged = true\n')
    assert p.extras("lxd") == {"security.nesting": "true", "limits.processes": "500", "limits.cpu.allowance": "50%"}
    assert p.extras("lxc") == {"lxc.prlimit.nofile": "4096", "lxc.cap.drop": "sys_admin", "lxc.start.auto": "1"}
    assert p.extras("pve")["unprivileged"] == "1"
    assert "raw.lxc" not in allow.allowed("lxd") and "limits.*" in allow.allowed("lxd")


# -- merge rules ---------------------------------------------------------------------------------


def test_merge_rules() -> None:
    a = _parse('description = "a"\ncpus = 1\nmemory = "1g"\nnetwork = "n1"\nicc = false\nnesting = true\n'
               '[dns]\nservers = ["10.0.0.1", "10.0.0.2"]\nsearch = ["a.example"]\n'
               '[env]\nA = "1"\nB = "1"\n[labels]\nx = "1"\n[lxd]\n"limits.processes" = 10\n"boot.autostart" = true\n',
               "a")
    b = _parse('cpus = 2\n[dns]\nservers = ["10.0.0.9"]\n[env]\nB = "2"\nC = "2"\n[lxd]\n"limits.processes" = 20\n', "b")
    m = merge([a, b])
    assert m.name == "a+b" and m.cpus == 2 and m.memory == 1024**3 and m.nesting is True
    assert m.env == {"A": "1", "B": "2", "C": "2"} and m.labels == {"x": "1"}
    assert m.dns == ("10.0.0.9",), "a server list is replaced whole"
    assert m.dns_search == ("a.example",), "search is its own list"
    assert m.extras("lxd") == {"limits.processes": "20", "boot.autostart": "true"}
    assert (m.network, m.icc) == ("n1", False)
    c = _parse('network = "n2"', "c")
    assert (merge([a, c]).network, merge([a, c]).icc) == ("n2", None), "network and icc go together"
    assert merge([]) == Profile(name="")


def test_flags_win_over_profiles() -> None:
    p = _parse('cpus = 1\nmemory = "512m"\nnetwork = "n1"\nicc = false\nprivileged = true\n'
               '[dns]\nservers = ["10.0.0.1"]\n[env]\nA = "p"\nB = "p"\n[labels]\nl = "p"\n')
    spec = _spec("img", None, None, ["B=flag"], ["m=flag"], "2", None, False, False,
                 "other", None, ["10.0.0.7"], None, False, p)
    assert spec.cpus == 2 and spec.memory == 512 * 1024**2
    assert spec.env == {"A": "p", "B": "flag"} and spec.labels == {"l": "p", "m": "flag"}
    assert spec.network == "other" and spec.dns == ("10.0.0.7",)
    assert spec.privileged, "--privileged is a switch: a profile's true stays"
    plain = _spec("img", None, None, None, None, None, None, False, False, profile=p)
    assert plain.network == "n1" and plain.dns == ("10.0.0.1",) and plain.cpus == 1


# -- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeBackend:
    backend = FakeBackend()
    monkeypatch.setattr(cman.backends, "load", lambda name: backend)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "cman" / "profiles").mkdir(parents=True)
    return backend


def _err_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(("verb", "code"), [("run", 125), ("create", 2)])
def test_a_smuggled_include_is_one_line_and_no_engine_call(
    fake: FakeBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str, code: int,
) -> None:
    path = tmp_path / "cman" / "profiles" / "evil.toml"
    path.write_text('[lxc]\n"lxc.prlimit.nofile" = "1\\nlxc.include = /etc/shadow"\n')
    assert main(["--backend", "docker", verb, "--profile", "evil", "img", "true"]) == code
    err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith(f"cman: profile {path}: ") and "lxc.prlimit.nofile" in err[0]
    assert fake.calls == []


def test_profile_privileged_is_said_on_stderr_and_later_profiles_win(
    fake: FakeBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "cman" / "profiles"
    (folder / "a.toml").write_text('privileged = true\ncpus = 1\n[env]\nX = "a"\n')
    (folder / "b.toml").write_text('cpus = 2\n[env]\nX = "b"\n')
    assert main(["--backend", "docker", "create", "--profile", "a", "--profile", "b", "--name", "c", "img"]) == 0
    spec = fake.made["c"]
    assert spec.privileged and spec.cpus == 2 and spec.env == {"X": "b"}
    err = _err_lines(capsys)
    assert len(err) == 1 and "privileged on docker" in err[0]


def test_nesting_where_the_backend_lacks_it_is_unsupported(
    fake: FakeBackend, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--backend", "docker", "create", "--profile", "docker-host", "img"]) == ExitCode.UNSUPPORTED
    err = _err_lines(capsys)
    assert len(err) == 1 and "does not support nesting" in err[0]
    assert fake.calls == []


def test_profile_ls_and_show(fake: FakeBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    (tmp_path / "cman" / "profiles" / "isolated.toml").write_text('description = "mine"\ncpus = 0.5\n')
    assert main(["profile", "ls", "--json"]) == 0
    found = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert found["isolated"]["origin"] == "user" and found["isolated"]["shadows"]
    assert found["docker-host"]["origin"] in ("shipped", "system")
    assert main(["profile", "show", "isolated", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cpus"] == 0.5
    assert main(["profile", "show", "nope"]) == ExitCode.NOT_FOUND


# -- each backend's form -------------------------------------------------------------------------


def test_lxc_nesting_and_raw_keys_in_the_config(tmp_path: Path) -> None:
    from cman.backends.lxc import config, tools
    from cman.backends.lxc.idmap import IdMap

    paths = tools.Paths(str(tmp_path), "web")
    spec = ContainerSpec(image="img", name="web", nesting=True, extras={"lxc": {"lxc.prlimit.nofile": "4096"},
                                                                        "lxd": {"raw.lxc": "ignored here"}})
    if not os.path.isfile("/usr/share/lxc/config/nesting.conf"):  # no LXC here: said, not skipped
        with pytest.raises(Unsupported, match=r"nesting\.conf"):
            config.config_entries(paths, spec, {}, [], idmap=IdMap(100000, 100000), apparmor=True)
        return
    text = config.render_config(config.config_entries(paths, spec, {}, [], idmap=IdMap(100000, 100000),
                                                      apparmor=True))
    assert "lxc.include = /usr/share/lxc/config/nesting.conf\n" in text
    assert "lxc.mount.auto = cgroup:rw:force\n" in text and "lxc.cgroup.devices.allow = c 10:200 rwm\n" in text
    assert "lxc.apparmor.allow_nesting = 1\n" in text
    assert text.index("nesting.conf") < text.index("lxc.apparmor.profile = generated"), "cman's profile wins"
    assert "lxc.prlimit.nofile = 4096\n" in text and "raw.lxc" not in text
    plain = config.render_config(config.config_entries(paths, ContainerSpec(image="img"), {}, [],
                                                       idmap=IdMap(100000, 100000), apparmor=False))
    assert "nesting.conf" not in plain and "cgroup:rw:force" not in plain


def test_backends_check_a_library_callers_extras_too() -> None:
    from cman.backends.lxc import LxcBackend
    from cman.backends.lxd import LxdBackend

    with pytest.raises(InvalidValue, match=r"lxc\.include"):
        LxcBackend.validate_spec(ContainerSpec(image="i", extras={"lxc": {"lxc.include": "/x"}}))
    with pytest.raises(InvalidValue, match=r"raw\.lxc"):
        LxdBackend.validate_spec(ContainerSpec(image="i", extras={"lxd": {"raw.lxc": "x"}}))


def test_lxd_nesting_keys_follow_the_server() -> None:
    from cman.backends.lxd import nesting

    spec = ContainerSpec(image="i", nesting=True, extras={"lxd": {"security.nesting": "false", "limits.processes": "9"}})
    full = {"api_extensions": ["container_syscall_intercept"],
            "environment": {"kernel_features": {"seccomp_listener": "true"}}}
    got = nesting.config(spec, full)
    assert got["security.nesting"] == "true", "nesting = true wins over a raw key"
    assert got["security.syscalls.intercept.mknod"] == got["security.syscalls.intercept.setxattr"] == "true"
    assert got["limits.processes"] == "9"
    old = nesting.config(spec, {"api_extensions": [], "environment": {}})
    assert "security.syscalls.intercept.mknod" not in old and old["security.nesting"] == "true"
    assert nesting.config(ContainerSpec(image="i"), None) == {}
