"""The typer app: every command, and the global options (:func:`_global`).

Only the module of the command being run is loaded and turned into click commands;
``--help`` and shell completion load them all. :mod:`cman.cli` maps cman's errors to
exit codes; :func:`run` maps typer's and click's own (usage errors, aborts).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .. import __version__
from ..errors import ExitCode
from ._common import open_session

COMMANDS = {
    **dict.fromkeys(("run", "create", "ps", "start", "stop", "restart", "rm", "exec", "logs", "inspect"), "containers"),
    **dict.fromkeys(("pull", "images", "image"), "images"),
    "network": "network",
    "engine": "engine",
    **dict.fromkeys(("stats", "top"), "stats_commands"),
    "monitor": "monitor",
    "system": "system",
    "search": "search",
    "profile": "profile",
    "provision": "provision",
    "context": "context",
}
"""Top-level command -> the module that defines it. Only that module is loaded and
turned into click commands for a run (~60 ms saved on every call); --help and
shell completion load them all."""


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"cman {__version__}\n")
        raise typer.Exit()


def _global(
    ctx: typer.Context,
    backend: Annotated[
        str | None,
        typer.Option("--backend", "-B", help="docker, lxd or lxc (default: $CMAN_BACKEND, else the first reachable engine, Docker first)."),
    ] = None,
    lxcpath: Annotated[
        str | None,
        typer.Option("--lxcpath", "-P", help="LXC containers' directory for the lxc backend (default /var/lib/lxc, or $CMAN_LXC_PATH)."),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option("--context", "-c", metavar="NAME",
                     help="Talk to this context's engine (see `cman context`); all: every context (ps, images, stats). "
                          "Default: $CMAN_CONTEXT, else the one `cman context use` chose, else none."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    s = open_session(backend=backend, lxcpath=lxcpath, context=context, debug=debug, command=ctx.invoked_subcommand)
    ctx.obj = s
    ctx.call_on_close(s.close)  # ends kept connections (Docker over ssh) before cman exits


def _invoked_command(argv: list[str]) -> str | None:
    """The top-level command named in argv, skipping global options; "" when ``--version``
    comes first (the eager option answers before any command is looked up)."""
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg in ("--backend", "-B", "--lxcpath", "-P", "--context", "-c"):
            skip_value = True
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
        elif arg in ("--help", "-h") or arg.startswith("--install-completion") or arg.startswith("--show-completion"):
            return None
        elif arg == "--version":
            return ""
    return None


def build_app(command: str | None = None) -> typer.Typer:
    """The Typer app with every command, or only ``command``'s when it is known ("": none,
    for ``cman --version``)."""
    import importlib

    app = typer.Typer(
        name="cman",
        help="cman: one container manager for Docker, LXD and raw LXC.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_global)
    modules = [COMMANDS[command]] if command else [] if command == "" else list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        importlib.import_module(f".{module}", __package__).register(app, command)
    return app


def run(args: list[str]) -> int:
    """Run the typer app on ``args``: its result, or the exit code of typer's and click's own
    exits and usage errors (cman's errors reach the caller)."""
    completing = any(k.endswith("_COMPLETE") for k in os.environ)
    try:
        app = build_app(None if completing else _invoked_command(args))
        result = app(args=args, prog_name="cman", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as done:
        return int(done.exit_code or 0)
    except typer.Abort:
        sys.stderr.write("cman: aborted\n")
        return int(ExitCode.INTERRUPTED)
    except Exception as err:
        # typer vendors click; its ClickException is the class with show() and exit_code.
        if not (callable(getattr(err, "show", None)) and isinstance(getattr(err, "exit_code", None), int)):
            raise  # cman's errors, or a bug: cman.cli.main says them
        err.show()  # type: ignore[attr-defined]
        if _invoked_command(args) in ("run", "exec") and err.exit_code == ExitCode.USAGE:  # type: ignore[attr-defined]
            return int(ExitCode.RUN_FAILED)  # as docker run/exec: their own failures are 125
        return int(err.exit_code)  # type: ignore[attr-defined]
