"""``cman profile ls|show``: the profiles ``run``/``create --profile`` can use (:mod:`cman.profiles`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ._common import print_json, print_table, printable

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def register(app: typer.Typer, only: str | None = None) -> None:
    """Add the ``profile`` sub-app to ``app`` (when ``only`` is None or "profile")."""
    if only not in (None, "profile"):
        return
    profile_app = typer.Typer(help="Profiles: named container settings for run/create --profile.",
                              no_args_is_help=True)
    app.add_typer(profile_app, name="profile")

    @profile_app.command("ls")
    def ls(as_json: Json = False) -> None:
        """List profiles: the user's ($XDG_CONFIG_HOME/cman/profiles) over /etc/cman/profiles over
        the shipped ones; a file that does not parse is an error naming it (exit 2)."""
        from .. import profiles

        found = profiles.available()
        if as_json:
            print_json([p.to_dict() for p in found])
            return
        print_table(["NAME", "ORIGIN", "DESCRIPTION"],
                    [[p.name, p.origin + (" (overrides " + ", ".join(p.shadows) + ")" if p.shadows else ""),
                      printable(p.description)] for p in found])

    @profile_app.command("show")
    def show(name: Annotated[str, typer.Argument(help="Profile name.")], as_json: Json = False) -> None:
        """Show one profile as cman read it (checked; sizes in bytes), and the file it came from."""
        from .. import profiles

        profile = profiles.load(name)
        data = profile.to_dict()
        if as_json:
            print_json(data)
            return
        for key, value in data.items():
            if value in (None, {}, ()):
                continue
            if isinstance(value, dict):
                for sub, subvalue in value.items():
                    if isinstance(subvalue, dict):
                        for k, v in subvalue.items():
                            sys.stdout.write(f"{key}.{sub}: {printable(k)} = {printable(str(v))}\n")
                    else:
                        sys.stdout.write(f"{key}: {printable(sub)} = {printable(str(subvalue))}\n")
            elif isinstance(value, list):
                sys.stdout.write(f"{key}: {printable(' '.join(map(str, value)))}\n")
            else:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                sys.stdout.write(f"{key}: {printable(text)}\n")
