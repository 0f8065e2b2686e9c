"""``ps`` and ``stats`` without typer (cman.cli.quick): the same options as the typer
declarations, and any form it does not know left to typer.

The parity checks build the real typer commands and read their click parameters, so an option
added to ``ps`` or ``stats`` without its line in quick's tables fails here.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from cman.cli import quick
from cman.cli.app import build_app

from .test_lazy_imports import loaded_after

IMPL = {"ps": "cman.cli.ps:ps", "stats": "cman.cli.stats:stats"}
TYPER_ONLY_GLOBALS = {"--version", "--install-completion", "--show-completion"}
"""Global options not in quick's tables: they answer without a command (quick answers
``--version`` only when it is the whole argv)."""


def _click_command(name: str | None) -> Any:
    import typer.main

    group = typer.main.get_command(build_app(name or ""))
    return group if name is None else group.commands[name]  # type: ignore[attr-defined]


def _grammar_of(command: Any, leave: set[str]) -> tuple[dict[str, str], dict[str, str], str | None]:
    flags: dict[str, str] = {}
    values: dict[str, str] = {}
    positional = None
    for param in command.params:
        if param.param_type_name == "argument":
            positional = param.name
            continue
        opts = [o for o in [*param.opts, *param.secondary_opts] if o not in leave]
        for opt in opts:
            (flags if param.is_flag else values)[opt] = param.name
    return flags, values, positional


def _impl(command: str) -> Any:
    import importlib

    module, name = IMPL[command].split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("command", sorted(quick.GRAMMARS))
def test_quick_knows_exactly_the_options_of_the_typer_command(command: str) -> None:
    grammar = quick.GRAMMARS[command]
    flags, values, positional = _grammar_of(_click_command(command), set())
    assert dict(grammar.flags) == flags
    assert dict(grammar.values) == values
    assert grammar.positional == positional


def test_quick_knows_exactly_the_global_options_but_version_and_completion() -> None:
    flags, values, positional = _grammar_of(_click_command(None), TYPER_ONLY_GLOBALS)
    assert dict(quick.GLOBAL.flags) == flags
    assert dict(quick.GLOBAL.values) == values
    assert positional is None


@pytest.mark.parametrize("command", sorted(quick.GRAMMARS))
def test_the_shared_code_has_the_typer_command_defaults(command: str) -> None:
    """quick passes only what argv names; the rest are the function's defaults, which must be
    what the typer command would pass."""
    signature = inspect.signature(_impl(command))
    for param in _click_command(command).params:
        default = signature.parameters[param.name].default
        assert default == param.default or (default is None and param.default in ((), [])), param.name


@pytest.mark.parametrize(("argv", "expected"), [
    (["ps"], ("ps", {}, {})),
    (["ps", "-a"], ("ps", {}, {"all_": True})),
    (["ps", "-aq", "--json"], ("ps", {}, {"all_": True, "quiet": True, "as_json": True})),
    (["--backend", "docker", "ps", "--all"], ("ps", {"backend": "docker"}, {"all_": True})),
    (["--backend=lxd", "--debug", "-c", "remote", "ps"], ("ps", {"backend": "lxd", "debug": True, "context": "remote"}, {})),
    (["-B", "lxc", "-P", "/srv/lxc", "ps"], ("ps", {"backend": "lxc", "lxcpath": "/srv/lxc"}, {})),
    (["--backend", "docker", "--backend", "lxd", "ps"], ("ps", {"backend": "lxd"}, {})),  # click: the last wins
    (["--backend", "", "ps"], ("ps", {"backend": ""}, {})),  # refused by the session, as through typer
    (["stats", "--no-stream", "web", "-a", "lxd:db", "--interval", "0.5"],
     ("stats", {}, {"no_stream": True, "names": ["web", "lxd:db"], "all_": True, "interval": "0.5"})),
    (["stats", "--interval=2", "--cgroup", "v1", "--pidfile", "/tmp/m.pid", "--no-monitor", "--json"],
     ("stats", {}, {"interval": "2", "cgroup": "v1", "pidfile": "/tmp/m.pid", "no_monitor": True, "as_json": True})),
])
def test_forms_quick_answers(argv: list[str], expected: tuple[str, dict[str, Any], dict[str, Any]]) -> None:
    assert quick.parse(argv) == expected


@pytest.mark.parametrize("argv", [
    [], ["--version"], ["--help"], ["ps", "--help"], ["ps", "-h"], ["stats", "-h"], ["--debug"],
    ["run", "busybox"], ["images"], ["top"], ["ps", "--bogus"], ["ps", "-ax"], ["ps", "web"],
    ["ps", "--all=yes"], ["ps", "-"], ["ps", "--"], ["--backend"], ["--backend", "docker"],
    ["--backend", "-a", "ps"], ["-Bdocker", "ps"], ["-B=docker", "ps"], ["--bogus", "ps"], ["-a", "ps"],
    ["ps", "--backend", "docker"], ["stats", "--interval"], ["stats", "--interval", "-1"],
    ["stats", "--", "web"], ["stats", "--cgroup"], ["STATS"], ["--install-completion", "ps"],
])
def test_forms_left_to_typer(argv: list[str]) -> None:
    """Typer reads these (help, another command, a usage error in click's words)."""
    assert quick.parse(argv) is None


def test_shell_completion_is_left_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_CMAN_COMPLETE", "complete_bash")
    assert quick.parse(["ps"]) is None


def test_quick_runs_without_typer() -> None:
    """A bad --backend is refused by the session (exit 2) with typer never imported."""
    code = ("from cman.cli import main\nimport contextlib, io\n"
            "with contextlib.redirect_stderr(io.StringIO()):\n    assert main(['--backend', 'nosuch', 'ps']) == 2")
    assert loaded_after(code, ["typer", "cman.cli.app", "cman.cli.containers"]) == []
    assert loaded_after(code.replace("'ps'", "'stats', '--no-stream'"), ["typer", "cman.cli.stats_commands"]) == []


def test_version_alone_is_answered_without_typer(capsys: pytest.CaptureFixture[str]) -> None:
    from cman import __version__

    assert quick.answer(["--version"]) == 0
    assert capsys.readouterr().out == f"cman {__version__}\n"
    code = "from cman.cli import main\nassert main(['--version']) == 0"
    assert loaded_after(code, ["typer", "cman.cli.app"]) == []
    assert quick.answer(["--version", "ps"]) is None  # typer's eager option: the version, and no ps


def test_a_form_left_to_typer_gets_click_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from cman.cli import main

    assert main(["ps", "--bogus"]) == 2
    assert "No such option: --bogus" in capsys.readouterr().err
