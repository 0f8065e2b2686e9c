"""cman's command line: a thin Typer layer over the library.

One error handler (:func:`main`) turns every :class:`~cman.errors.CmanError`
into one line on stderr and its documented exit code; a traceback appears only
with ``--debug`` (or CMAN_DEBUG=1), as in httpie.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .. import __version__
from ..errors import CmanError, ExitCode
from ._common import Session

app = typer.Typer(
    name="cman",
    help="cman: one container manager for Docker, LXD and raw LXC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"cman {__version__}\n")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    backend: Annotated[
        str | None,
        typer.Option("--backend", "-B", help="docker, lxd or lxc (default: $CMAN_BACKEND, else the first reachable engine, Docker first)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = Session(backend_option=backend, debug=debug or bool(os.environ.get("CMAN_DEBUG")))


def _register() -> None:
    from . import containers, engine, images

    containers.register(app)
    images.register(app)
    engine.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map errors to exit codes."""
    debug = "--debug" in (argv or sys.argv) or bool(os.environ.get("CMAN_DEBUG"))
    try:
        result = app(args=argv, prog_name="cman", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as done:
        return int(done.exit_code or 0)
    except CmanError as err:
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"cman: {err}\n")
        return int(err.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("cman: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return 0
    except Exception as err:  # a click usage error, or a bug
        import click

        if isinstance(err, click.exceptions.Abort):
            sys.stderr.write("cman: aborted\n")
            return int(ExitCode.INTERRUPTED)
        if isinstance(err, click.ClickException):
            err.show()
            return int(err.exit_code)
        if debug:
            raise
        sys.stderr.write(f"cman: internal error: {type(err).__name__}: {err} (run with --debug for the traceback)\n")
        return int(ExitCode.ERROR)
