"""``ps`` and ``stats`` without typer: the two commands that scripts and dashboards call in a loop.

Importing typer (and the click it vendors) and building a command is about 25 ms of every
start: a quarter of ``cman ps``, and most of what separates it from ``docker ps``. This module
knows the exact argument forms of those two commands and runs the same code as their typer
commands (:mod:`.ps`, :mod:`.stats`). Its tables hold the same options as the typer
declarations, and a unit test keeps the two equal. Any other argv (another command, ``--help``,
an option or a form it does not know: ``-Bdocker``, ``--``, a value that starts with ``-``) gets
None from :func:`answer`, and the typer app answers it, with its own usage errors.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._common import Session, open_session


class Grammar:
    """The options of one command (or the global ones), as click reads them."""

    __slots__ = ("flags", "positional", "values")

    def __init__(self, flags: Mapping[str, str], values: Mapping[str, str] | None = None,
                 positional: str | None = None) -> None:
        self.flags = flags
        """Option -> parameter that is True when the option is given."""
        self.values = values or {}
        """Option -> parameter that takes the option's one value (the last one given wins, as in click)."""
        self.positional = positional
        """Parameter that collects the other words (a list), or None: the command takes none."""


GLOBAL = Grammar(
    flags={"--debug": "debug"},
    values={"--backend": "backend", "-B": "backend", "--lxcpath": "lxcpath", "-P": "lxcpath",
            "--context": "context", "-c": "context"},
)
"""The global options of :func:`cman.cli.app._global` but ``--version`` (answered here when it is
the whole argv) and shell completion, which are typer's."""

GRAMMARS = {
    "ps": Grammar(flags={"--all": "all_", "-a": "all_", "--json": "as_json", "--quiet": "quiet", "-q": "quiet"}),
    "stats": Grammar(
        flags={"--all": "all_", "-a": "all_", "--no-stream": "no_stream", "--json": "as_json",
               "--no-monitor": "no_monitor"},
        values={"--interval": "interval", "--cgroup": "cgroup", "--pidfile": "pidfile"},
        positional="names",
    ),
}
"""The commands answered here, with the options of their typer declarations
(:mod:`.containers`, :mod:`.stats_commands`)."""


def _pidfile(value: str) -> object:
    from pathlib import Path

    from ..monitor.config import check_pidfile

    return check_pidfile(Path(value))  # what the typer option's callback does


CONVERT: Mapping[str, Callable[[str], object]] = {"pidfile": _pidfile}
"""Parameters whose typer option converts or checks its value."""


def _options(args: Sequence[str], grammar: Grammar, *, stop_at_word: bool) -> tuple[dict[str, Any], int] | None:
    """``args`` read by ``grammar`` as {parameter: value}, and the index where reading stopped
    (at the first word, when ``stop_at_word``); None for any form not known here."""
    found: dict[str, Any] = {}
    words: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            if stop_at_word:
                return found, i
            if grammar.positional is None or arg == "-":
                return None
            words.append(arg)
        elif arg in grammar.flags:
            found[grammar.flags[arg]] = True
        elif arg in grammar.values:
            if i + 1 == len(args) or args[i + 1].startswith("-"):
                return None  # click's "requires an argument", or a value click reads its own way
            i += 1
            found[grammar.values[arg]] = args[i]
        elif arg.startswith("--") and arg.partition("=")[0] in grammar.values:
            found[grammar.values[arg.partition("=")[0]]] = arg.partition("=")[2]
        elif not arg.startswith("--") and all(f"-{c}" in grammar.flags for c in arg[1:]):
            for c in arg[1:]:  # -aq
                found[grammar.flags[f"-{c}"]] = True
        else:
            return None
        i += 1
    if words:
        found[str(grammar.positional)] = words
    return found, i


def parse(args: Sequence[str]) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """(command, global options, the command's parameters), or None: the typer app answers."""
    if any(k.endswith("_COMPLETE") for k in os.environ):  # shell completion is typer's
        return None
    head = _options(args, GLOBAL, stop_at_word=True)
    if head is None or head[1] == len(args) or args[head[1]] not in GRAMMARS:
        return None
    options, at = head
    command = args[at]
    rest = _options(args[at + 1:], GRAMMARS[command], stop_at_word=False)
    if rest is None:
        return None
    return command, options, rest[0]


def _run(command: str, s: Session, params: dict[str, Any]) -> None:
    if command == "ps":
        from .ps import ps

        ps(s, **params)
    else:
        from .stats import stats

        stats(s, **params)


def answer(args: Sequence[str]) -> int | None:
    """Run ``args`` when they are a form known here and return the exit code; else None.
    cman's errors reach the caller (:func:`cman.cli.main`), as from the typer app."""
    if list(args) == ["--version"]:  # with anything else, typer's eager option answers
        from .. import __version__

        sys.stdout.write(f"cman {__version__}\n")
        return 0
    parsed = parse(args)
    if parsed is None:
        return None
    command, options, params = parsed
    s = open_session(backend=options.get("backend"), lxcpath=options.get("lxcpath"),
                     context=options.get("context"), debug=bool(options.get("debug")), command=command)
    try:
        for name, convert in CONVERT.items():
            if name in params:
                params[name] = convert(params[name])
        _run(command, s, params)
    finally:
        s.close()  # ends kept connections (Docker over ssh), as the typer app's on-close
    return 0
