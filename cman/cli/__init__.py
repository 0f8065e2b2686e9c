"""cman's command line: a thin Typer layer over the library.

One error handler (:func:`main`) turns every :class:`~cman.errors.CmanError`
into one line on stderr and its documented exit code; a traceback appears only
with ``--debug`` (or CMAN_DEBUG=1), as in httpie. ``ps`` and ``stats`` are
answered by :mod:`.quick` without loading typer; everything else, and any form
of those two that :mod:`.quick` does not know, goes to the typer app (:mod:`.app`).
"""

from __future__ import annotations

import os
import sys

from ..errors import CmanError, ExitCode
from ._common import Quit, printable, say_error


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command and map errors to exit codes."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("CMAN_DEBUG"))
    try:
        from . import quick

        code = quick.answer(args)
        if code is None:
            from . import app

            code = app.run(args)
        return code
    except Quit as done:
        return done.code
    except CmanError as err:
        if debug:
            import traceback

            sys.stderr.write(printable(traceback.format_exc(), keep="\n"))
        say_error(err)  # with what went wrong while cleaning up after it, on the same line
        return int(err.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("cman: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return 0
    except Exception as err:  # a bug
        if debug:
            raise
        sys.stderr.write(f"cman: internal error: {type(err).__name__}: {printable(str(err))} "
                         "(run with --debug for the traceback)\n")
        return int(ExitCode.ERROR)
