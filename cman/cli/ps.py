"""``cman ps``: the listing itself, without typer, so :mod:`.quick` and the typer command
(:mod:`.containers`) run the same code."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..errors import CmanError
from ._common import Session, print_json, print_table, warn

if TYPE_CHECKING:
    from ..models import Container


def ps(s: Session, *, all_: bool = False, as_json: bool = False, quiet: bool = False) -> None:
    """List containers on every reachable backend (or the chosen one); with --context all, in
    every context at once (exit 0 when at least one answered)."""
    if s.all_contexts:
        found = s.each_context(lambda b: b.containers(all=all_))
        print_in_contexts([(where, c) for where, listed in found for c in listed], as_json, quiet)
        return
    items: list[Container] = []
    for bname in s.listing_backends():
        try:
            items.extend(s.backend(bname).containers(all=all_))
        except CmanError as err:
            if s.explicit_backend():
                raise
            warn(f"{bname}: {err}")
    if quiet:
        sys.stdout.write("".join(f"{c.ref}\n" for c in items))
        return
    print_containers(items, as_json)


def print_containers(items: list[Container], as_json: bool) -> None:
    if as_json:
        print_json([c.to_dict() for c in items])
        return
    # LOCATION only when some engine is a cluster: its member, "-" for the others.
    located = any(c.location for c in items)
    print_table(
        ["BACKEND", "NAME", "ID", "IMAGE", "STATE", "STATUS", *(["LOCATION"] if located else [])],
        [[c.backend, c.name, c.id[:12], c.image, c.state, c.status, *([c.location or "-"] if located else [])]
         for c in items],
    )


def print_in_contexts(found: list[tuple[str, Container]], as_json: bool, quiet: bool) -> None:
    """``ps --context all``: a CONTEXT column first (a ``context`` key), addresses as CONTEXT/BACKEND:NAME."""
    if quiet:
        sys.stdout.write("".join(f"{where}/{c.ref}\n" for where, c in found))
    elif as_json:
        print_json([{"context": where, **c.to_dict()} for where, c in found])
    else:
        located = any(c.location for _, c in found)
        print_table(
            ["CONTEXT", "BACKEND", "NAME", "ID", "IMAGE", "STATE", "STATUS", *(["LOCATION"] if located else [])],
            [[where, c.backend, c.name, c.id[:12], c.image, c.state, c.status,
              *([c.location or "-"] if located else [])] for where, c in found],
        )
