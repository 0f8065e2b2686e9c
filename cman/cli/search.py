"""``cman search TERM``: a thin layer over :mod:`cman.search`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ._common import print_json, print_table, printable, session

TAGS_SHOWN = 8


def register(app: typer.Typer, only: str | None = None) -> None:
    """Add ``search`` to ``app`` (when ``only`` is None or "search")."""
    if only not in (None, "search"):
        return

    @app.command("search")
    def search(
        ctx: typer.Context,
        term: Annotated[str, typer.Argument(help="Part of a repository name (any case).")],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON: one object per repository.")] = False,
        limit: Annotated[int, typer.Option("--limit", help="At most N repositories from each source (1-1000).")] = 25,
    ) -> None:
        """List repositories and their tags in the configured registries (mirrors, insecure and
        search registries of config.toml, $CMAN_REGISTRY_MIRROR) and images on the LXD image
        servers of $CMAN_LXD_REMOTES. A source that cannot be listed is one line on stderr;
        exit 0 when at least one source answered, else 5. Nothing unconfigured is contacted."""
        from .. import search as _search

        result = _search.search(term, limit=limit, backend=session(ctx).explicit_backend())
        if as_json:
            print_json([hit.to_dict() for hit in result.hits])
        elif result.hits:
            print_table(["SOURCE", "NAME", "TAGS"], [[h.source, h.name, _tags(h.tags)] for h in result.hits])
        for failure in result.failures:
            sys.stderr.write(f"cman: search: {printable(failure.source)}: {printable(failure.why)}\n")
        if result.exit_code:
            raise typer.Exit(result.exit_code)


def _tags(tags: tuple[str, ...]) -> str:
    shown = ", ".join(tags[:TAGS_SHOWN])
    return shown + (f" (+{len(tags) - TAGS_SHOWN} more)" if len(tags) > TAGS_SHOWN else "")
