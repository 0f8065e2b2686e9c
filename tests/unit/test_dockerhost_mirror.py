"""``cman provision registry-mirror`` without an engine: the spec's validation, the config.yml cman
renders, what the registry's log says went wrong, and the steps' idempotence on a stand-in container."""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from cman.backends.base import Backend
from cman.dockerhost import mirror
from cman.dockerhost.guest import WRITE
from cman.dockerhost.mirror import CONFIG, MirrorSpec, provision_mirror, registry_error
from cman.dockerhost.steps import ProvisionFailed
from cman.errors import ContainerNotFound, ExitCode, InvalidName, InvalidValue, Unsupported, UsageError
from cman.models import ExecResult, State

# -- the spec ---------------------------------------------------------------------------------------


def test_spec_defaults_and_upstream_normalised() -> None:
    spec = MirrorSpec("mirror")
    assert (spec.upstream, spec.port, spec.network) == (None, 5000, None)
    assert MirrorSpec("m", upstream="https://registry-1.docker.io/").upstream == "https://registry-1.docker.io"
    assert MirrorSpec("m", upstream="http://10.0.3.5:5000").upstream == "http://10.0.3.5:5000"
    assert MirrorSpec("m", port=1).port == 1 and MirrorSpec("m", port=65535).port == 65535


@pytest.mark.parametrize(("upstream", "why"), [
    ("ftp://registry.example", "use http://HOST[:PORT]"),
    ("registry.example:5000", "use http://HOST[:PORT]"),
    ("https://", "use http://HOST[:PORT]"),
    ("https://user:secret@registry.example", "credentials do not belong in the URL"),
    ("https://registry.example/v2", "no path"),
    ("https://registry.example/?a=b", "no path, query"),
    ("https://registry.example:99999", "out of range"),
    ("https://registry.example\n", "printable ASCII"),
    ("https://reg istry.example", "printable ASCII"),
])
def test_bad_upstream_is_a_usage_error_naming_the_option(upstream: str, why: str) -> None:
    with pytest.raises(InvalidValue) as err:
        MirrorSpec("mirror", upstream=upstream)
    assert err.value.exit_code == ExitCode.USAGE
    assert err.value.field == "--upstream" and "--registry-mirror" not in str(err.value)
    assert why in str(err.value)


@pytest.mark.parametrize("port", [0, -1, 65536, True])
def test_bad_port(port: int) -> None:
    with pytest.raises(InvalidValue, match="--port") as err:
        MirrorSpec("mirror", port=port)
    assert err.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("name", ["", "1mirror", "-mirror", "mirror-", "mir_ror", "mir.ror", "a" * 64, "mirr or"])
def test_bad_mirror_name(name: str) -> None:
    with pytest.raises(InvalidName, match="mirror name") as err:
        MirrorSpec(name)
    assert err.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("network", ["", "bad/net", "-net", "n" * 65, "net work"])
def test_bad_network_name(network: str) -> None:
    with pytest.raises(InvalidName, match="network name") as err:
        MirrorSpec("mirror", network=network)
    assert err.value.exit_code == ExitCode.USAGE


# -- config.yml -------------------------------------------------------------------------------------


def _yaml_lines(data: bytes) -> list[str]:
    return [line for line in data.decode().splitlines() if not line.startswith("#")]


def test_config_plain_registry() -> None:
    text = MirrorSpec("mirror", port=5001).config()
    assert _yaml_lines(text) == [
        "version: 0.1",
        "log:", "  fields:", "    service: registry",
        "storage:", "  cache:", "    blobdescriptor: inmemory",
        "  filesystem:", '    rootdirectory: "/var/lib/docker-registry"',
        "  delete:", "    enabled: true",
        "http:", '  addr: ":5001"', "  headers:", "    X-Content-Type-Options: [nosniff]",
    ]
    assert b"proxy" not in text and b"auth" not in text
    assert text.endswith(b"\n")


def test_config_pull_through_cache() -> None:
    text = MirrorSpec("mirror", upstream="https://registry-1.docker.io/").config()
    lines = _yaml_lines(text)
    assert lines[-2:] == ["proxy:", '  remoteurl: "https://registry-1.docker.io"']
    assert '  addr: ":5000"' in lines
    assert json.loads(lines[-1].split(": ", 1)[1]) == "https://registry-1.docker.io"


def test_config_is_stable() -> None:
    """A rerun compares bytes: the same spec renders the same file."""
    assert MirrorSpec("a", upstream="http://10.0.0.1:5000").config() == MirrorSpec(
        "b", upstream="http://10.0.0.1:5000/").config()


# -- the registry's log -----------------------------------------------------------------------------

LOG_PANIC = """time="2026-12-02T15:48:29Z" level=info msg="redis not configured" service=registry
panic: Get "http://10.203.111.1:9/v2/": dial tcp 10.203.111.1:9: connect: connection refused

goroutine 1 [running]:
github.com/docker/distribution/registry/handlers.NewApp({0x11a4b98?, 0xc000562210?}, 0xc000192380)
\tgithub.com/docker/distribution/cmd/registry/main.go:22 +0x25
"""


def test_registry_error_finds_the_panic_under_the_stack() -> None:
    assert registry_error(LOG_PANIC) == ('panic: Get "http://10.203.111.1:9/v2/": dial tcp 10.203.111.1:9: '
                                         'connect: connection refused')


def test_registry_error_takes_the_last_errors_message() -> None:
    log = ('time="x" level=error msg="first"\n'
           'time="x" level=fatal msg="listen tcp :80: bind: permission denied" go.version=go1.19.8\n'
           'time="x" level=info msg="later"\n')
    assert registry_error(log) == "listen tcp :80: bind: permission denied"
    assert registry_error("one\nlast line\n\n") == "last line"
    assert registry_error("") == "no output"


# -- the steps, on a stand-in container ---------------------------------------------------------------


class Box:
    """A running container with the registry's files and process, driven by the steps' argv."""

    name = "lxc"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {CONFIG: b"version: 0.1\n# Debian's\n"}
        self.running = True
        self.config_newer = False
        self.starts = 0
        self.exists = True

    @staticmethod
    def validate_name(name: str) -> None:
        del name

    def inspect(self, name: str) -> Any:
        if not self.exists:
            raise ContainerNotFound(name)
        return SimpleNamespace(state=State.RUNNING, addresses={"net": "10.9.9.2"})

    def exec_capture(self, name: str, argv: Sequence[str], *, stdin: bytes = b"") -> ExecResult:
        del name
        argv = list(argv)
        if argv[0] == "timeout":
            argv = argv[4:]
        done = ExecResult(0, b"", b"")
        if argv[0] == "cat":
            data = self.files.get(argv[2])
            done = ExecResult(0, data, b"") if data is not None else ExecResult(1, b"", b"No such file")
        elif argv[:3] == ["sh", "-c", WRITE]:
            self.files[argv[4]] = stdin
            self.config_newer = self.running
        elif tuple(argv) == mirror.REGISTRY_STOP:
            self.running = False
        elif tuple(argv) == mirror.REGISTRY_START:
            self.running, self.config_newer = True, False
            self.starts += 1
        elif tuple(argv) == mirror.REGISTRY_STATUS:
            done = ExecResult(0 if self.running else 3, b"", b"")
        elif tuple(argv) == mirror.CONFIG_NEWER:
            done = ExecResult(0 if self.config_newer else 1, b"", b"")
        elif argv[0] == "tail":
            done = ExecResult(0, b"", b"")
        else:
            raise AssertionError(f"unexpected argv {argv}")
        return done


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Box:
    made = Box()
    monkeypatch.setattr(mirror, "probe", lambda url, timeout=0.0: (200, "") if made.running else (None, "refused"))
    monkeypatch.setattr(mirror, "START_WAIT", 0.0)
    return made


def _run(box: Box, spec: MirrorSpec) -> mirror.MirrorResult:
    return provision_mirror(cast(Backend, box), spec, lambda _m: None)


def _repaired(result: mirror.MirrorResult) -> list[str]:
    return [s.name for s in result.report.steps if s.status == "repaired"]


def test_steps_write_the_config_restart_then_change_nothing(box: Box) -> None:
    spec = MirrorSpec("mirror", network="net")
    first = _run(box, spec)
    assert _repaired(first) == ["config", "registry"] and first.report.changed
    assert (first.address, first.host_port) == ("http://10.9.9.2:5000", "10.9.9.2:5000")
    assert box.files[CONFIG] == spec.config() and box.starts == 1
    again = _run(box, spec)
    assert not again.report.changed and box.starts == 1


def test_a_new_port_rewrites_and_restarts(box: Box) -> None:
    _run(box, MirrorSpec("mirror", network="net"))
    moved = _run(box, MirrorSpec("mirror", network="net", port=5001))
    assert _repaired(moved) == ["config", "registry"] and moved.address == "http://10.9.9.2:5001"
    assert box.starts == 2


def test_a_dead_registry_is_restarted(box: Box) -> None:
    _run(box, MirrorSpec("mirror", network="net"))
    box.running = False
    assert _repaired(_run(box, MirrorSpec("mirror", network="net"))) == ["registry"]


def test_a_config_written_after_the_start_restarts(box: Box) -> None:
    """cman stopped between writing config.yml and the restart: the next run restarts."""
    spec = MirrorSpec("mirror", network="net")
    _run(box, spec)
    box.config_newer = True
    assert _repaired(_run(box, spec)) == ["registry"] and box.starts == 2


def test_a_registry_that_will_not_start_fails_the_step(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror, "probe", lambda url, timeout=0.0: (None, "refused"))
    with pytest.raises(ProvisionFailed) as err:
        _run(box, MirrorSpec("mirror", network="net", upstream="http://10.9.9.1:9"))
    assert err.value.exit_code == ExitCode.PROVISION_FAILED and err.value.step == "registry"
    assert "http://10.9.9.1:9/v2/" in str(err.value)


def test_provision_refuses_docker_and_a_missing_network(box: Box) -> None:
    box.name = "docker"
    with pytest.raises(Unsupported):
        _run(box, MirrorSpec("mirror", network="net"))
    box.name = "lxc"
    with pytest.raises(UsageError, match="--network"):
        _run(box, MirrorSpec("mirror"))
