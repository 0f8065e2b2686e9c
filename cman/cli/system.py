"""``cman system prune``: remove what killed cman processes left behind (:mod:`cman.leftovers`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ._common import print_json, say_error, warn


def register(app: typer.Typer, only: str | None = None) -> None:
    """Add the ``system`` group to ``app`` (when ``only`` is None or "system")."""
    if only not in (None, "system"):
        return
    system_app = typer.Typer(help="Host-wide housekeeping.", no_args_is_help=True)

    @system_app.command("prune")
    def prune(
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Remove what a killed cman left behind on every reachable engine and on the host.

        One line per item: WHERE: WHAT: WHY. Never touches what you made or what a running
        cman is working on. Exit 0, or the code of the first engine that failed.
        """
        from .. import leftovers

        report = leftovers.prune(dry_run=dry_run)
        if as_json:
            print_json([item.to_dict() for item in report.items])
        else:
            sys.stdout.write("".join(f"{item}\n" for item in report.items))
        for message in report.warnings:
            warn(message)
        for where, err in report.problems:
            say_error(f"{where}: {err}")
        if dry_run and report.items and not as_json:
            sys.stderr.write("cman: dry run: nothing was removed\n")
        if report.problems:
            raise typer.Exit(int(report.problems[0][1].exit_code))

    app.add_typer(system_app, name="system")
