"""State and output helpers shared by the CLI's sub-apps.

State lives in ``ctx.obj`` (a :class:`Session`), never in module globals.
Backends are loaded on first use, so a command imports only the engines it touches.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import typer

from .. import backends
from ..backends.base import Backend
from ..errors import AmbiguousName, CmanError, ContainerNotFound, NoEngine, UsageError
from ..models import StdIO

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Session:
    backend_option: str | None = None
    debug: bool = False
    _loaded: dict[str, Backend] = field(default_factory=dict)

    def backend(self, name: str | None = None) -> Backend:
        """The named backend, else --backend / $CMAN_BACKEND / the first reachable one."""
        chosen = name or backends.default_name(self.backend_option)
        if chosen not in self._loaded:
            self._loaded[chosen] = backends.load(chosen)
        return self._loaded[chosen]

    def check_image(self, ref: str) -> None:
        """Refuse a bad image reference (exit 2) before any engine is probed: by the chosen
        backend's rules when --backend / $CMAN_BACKEND names one, else only what no engine takes."""
        backends.check_image(ref, self.explicit_backend())

    def explicit_backend(self) -> str | None:
        return backends.explicit_name(self.backend_option)

    def listing_backends(self) -> list[str]:
        """Backends a listing asks: the chosen one, else every reachable one."""
        explicit = self.explicit_backend()
        if explicit:
            return [explicit]
        found = backends.reachable_names()
        if not found:
            raise NoEngine()
        return found

    def resolve(self, ref: str) -> tuple[Backend, str]:
        """NAME or BACKEND:NAME -> (backend, name); ambiguity is an error that says what to write."""
        prefix, name = backends_split(ref)
        if prefix:
            return self.backend(prefix), name
        if self.explicit_backend():
            return self.backend(), name
        hits: list[str] = []
        candidates = self.listing_backends()
        if len(candidates) == 1:
            return self.backend(candidates[0]), name
        refused: UsageError | None = None
        for bname in candidates:
            try:
                self.backend(bname).inspect(name)
            except ContainerNotFound:
                continue
            except UsageError as err:  # the name itself is bad: say so rather than "not found"
                refused = refused or err
                continue
            except CmanError:
                continue
            hits.append(bname)
        if not hits:
            raise refused or ContainerNotFound(name)
        if len(hits) > 1:
            raise AmbiguousName(name, hits)
        return self.backend(hits[0]), name

    def close(self) -> None:
        for b in self._loaded.values():
            b.close()


def backends_split(ref: str) -> tuple[str | None, str]:
    from ..validate import split_ref

    return split_ref(ref, backends.names())


def session(ctx: typer.Context) -> Session:
    obj = ctx.find_root().obj
    if not isinstance(obj, Session):
        obj = Session()
        ctx.find_root().obj = obj
    return obj


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """docker-style plain columns: cheap, greppable, no colour."""
    rows = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["   ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["   ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    sys.stdout.write("\n".join(lines) + "\n")


def terminal_stdio(*, interactive: bool, tty: bool) -> StdIO:
    return StdIO(
        stdin=sys.stdin.buffer if interactive else None,
        stdout=sys.stdout.buffer,
        stderr=sys.stderr.buffer,
        tty=tty,
    )


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{n}B"


def printable(text: str, keep: str = "") -> str:
    """Control characters (from user input, or an engine) shown escaped (``\\x1b``), never raw on a terminal."""
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def progress(message: str) -> None:
    """A step of a long command, as it runs (stderr, so --json output stays clean)."""
    sys.stderr.write(f"cman: {printable(message)}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    sys.stderr.write(f"cman: warning: {printable(message)}\n")


def say_error(err: object) -> None:
    """The error's one line; what went wrong while cleaning up after it (its notes, see
    ``lifecycle.run``) goes on the same line, so a script reads one line per failure."""
    text = "; and ".join([str(err), *(str(note) for note in getattr(err, "__notes__", ()))])
    sys.stderr.write(f"cman: {printable(text)}\n")


def only_command(app: typer.Typer, only: str | None) -> Callable[..., Callable[[F], F]]:
    """A ``@command(name)`` decorator that registers on ``app`` only the wanted command."""

    def command(name: str, **kwargs: Any) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            if only is None or only == name:
                app.command(name, **kwargs)(fn)
            return fn

        return decorate

    return command
