"""State and output helpers shared by the CLI's sub-apps.

State lives in ``ctx.obj`` (a :class:`Session`), never in module globals.
Backends are loaded on first use, so a command imports only the engines it touches.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .. import backends
from ..errors import AmbiguousName, CmanError, ContainerNotFound, ExitCode, NoEngine, UsageError

if TYPE_CHECKING:  # a monitor's answer to `stats --no-stream` needs neither; `ps` and `stats` no typer
    import typer

    from ..backends.base import Backend
    from ..models import StdIO

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class Quit(Exception):
    """End the run with this exit code; what went wrong is already on stderr (typer.Exit, for
    code that runs without typer: :mod:`.quick`)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = int(code)


@dataclass
class Session:
    backend_option: str | None = None
    debug: bool = False
    context: str | None = None
    """The context of the whole run (--context, $CMAN_CONTEXT, `context use`); its settings are
    in this process's environment and its backend is ``backend_option``."""
    all_contexts: bool = False
    """``--context all``: ps, images and stats ask every context (:meth:`each_context`)."""
    _loaded: dict[str, Backend] = field(default_factory=dict)
    _elsewhere: dict[str, Backend] = field(default_factory=dict)
    """Backends of other contexts (``CONTEXT/NAME``), by context name."""
    settings: Mapping[str, str] | None = None
    """A context's settings, bound in whichever thread asks :meth:`backend` (the threads a
    collection starts inherit no binding): see :meth:`for_backend`."""

    def use_context(self, option: str | None) -> None:
        """Apply the run's context: --context > $CMAN_CONTEXT > the current one > none.

        Without any, nothing is imported and nothing changes (``cman ps`` as before)."""
        from os import environ, path

        from ..config import config_dir

        # os.path.exists: a folder this user cannot enter (HOME kept across `sudo -u`) holds no
        # choice of this user's; Path.exists() would raise PermissionError there
        if not (option or environ.get("CMAN_CONTEXT") or path.exists(config_dir() / "contexts" / "current")):
            return
        from .. import contexts

        name, source = contexts.selected(option)
        if name is None:
            return
        if name == contexts.ALL:
            self.all_contexts = True
            if self.backend_option:  # --backend B with all: the contexts of that engine
                backends.checked(self.backend_option)
            return
        chosen = contexts.load(name, source=source)
        if self.backend_option and self.backend_option != chosen.backend:
            raise UsageError(f"--backend {self.backend_option} does not match context {name}, "
                             f"which is {chosen.backend}", hint="drop --backend, or choose another context")
        backends.apply_to_process(chosen.settings)
        self.backend_option = chosen.backend
        self.context = chosen.name

    def _one(self) -> None:
        if self.all_contexts:
            raise UsageError("--context all works with ps, images and stats",
                             hint="name one context, or address a container as CONTEXT/NAME")

    def backend(self, name: str | None = None) -> Backend:
        """The named backend, else --backend / $CMAN_BACKEND / the first reachable one."""
        self._one()
        if self.settings is not None:
            backends.bind(self.settings)
        chosen = name or backends.default_name(self.backend_option)
        if chosen not in self._loaded:
            self._loaded[chosen] = backends.load(chosen)
        return self._loaded[chosen]

    def check_image(self, ref: str) -> None:
        """Refuse a bad image reference (exit 2) before any engine is probed: by the chosen
        backend's rules when --backend / $CMAN_BACKEND names one, else only what no engine takes."""
        backends.check_image(ref, self.explicit_backend())

    def explicit_backend(self) -> str | None:
        self._one()
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
        """NAME, BACKEND:NAME, CONTEXT/NAME or CONTEXT/BACKEND:NAME -> (backend, name); ambiguity
        is an error that says what to write. A CONTEXT/ ref binds that context's endpoint to
        this thread until the next resolve (the caller uses the backend right away)."""
        head, slash, rest = ref.partition("/")
        # no container name has a '/': "a/../x" is a bad name (exit 2), not context "a"
        if slash and head and rest and "/" not in rest and _CONTEXT_NAME.fullmatch(head):
            return self._in_context(head, rest)
        if self._elsewhere:
            backends.bind(None)  # this run's own endpoint again, after a CONTEXT/NAME bound another
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

    def _in_context(self, name: str, ref: str) -> tuple[Backend, str]:
        from .. import contexts

        if name == self.context:  # the run's own context: its settings are the environment's
            prefix, cname = backends_split(ref)
            if prefix and prefix != self.backend_option:
                raise UsageError(f"context {name} is {self.backend_option}, not {prefix}", hint=f"write {name}/{cname}")
            return self.backend(), cname
        found = contexts.load(name)
        prefix, cname = backends_split(ref)
        if prefix and prefix != found.backend:
            raise UsageError(f"context {name} is {found.backend}, not {prefix}", hint=f"write {name}/{cname}")
        if name not in self._elsewhere:
            self._elsewhere[name] = backends.load(found.backend, found.settings)
        backends.bind(found.settings)
        return self._elsewhere[name], cname

    def for_backend(self, backend: Backend) -> Session:
        """A session whose one backend is ``backend``, for this thread's context (in
        :meth:`each_context`'s work): its endpoint is bound wherever the backend is asked for."""
        return Session(backend_option=backend.name, debug=self.debug, _loaded={backend.name: backend},
                       settings=backends.bound_settings())

    def contexts_to_ask(self) -> list[str]:
        """``--context all``: the stored contexts (of --backend's engine, when given)."""
        from .. import contexts

        found = contexts.names()
        if not found:
            raise UsageError("no context is stored", hint="create one: cman context create NAME --docker URL")
        return found

    def each_context(self, work: Callable[[Backend], T]) -> list[tuple[str, T]]:
        """``--context all``: ``work`` on every context's backend at once (a thread each, so the
        wall time is the slowest context's, not the sum), as (context, result) in name order.

        A context that fails (unreachable, a bad file) is one line on stderr
        (``cman: context X: ...``) and the others are still returned. When none answered:
        exit 5 (engine unavailable), after those lines."""
        import threading

        from .. import contexts

        made: list[tuple[str, Backend, Mapping[str, str]]] = []
        errors: dict[str, BaseException] = {}
        for name in self.contexts_to_ask():
            try:  # loaded and made here, one after the other: imports are not for threads
                found = contexts.load(name)
                if self.backend_option and found.backend != self.backend_option:
                    continue
                made.append((name, backends.load(found.backend, found.settings), found.settings))
            except CmanError as err:
                errors[name] = err
        results: dict[str, T] = {}

        def ask(name: str, backend: Backend, settings: Mapping[str, str]) -> None:
            with backends.bound(settings):
                try:
                    results[name] = work(backend)
                except BaseException as err:  # reported (or raised again) in the caller's thread
                    errors[name] = err
                finally:
                    backend.close()

        threads = [threading.Thread(target=ask, args=item, name=f"context-{item[0]}", daemon=True) for item in made]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name in sorted(errors):
            failure = errors[name]
            if not isinstance(failure, CmanError):
                raise failure
            say_error(f"context {name}: {failure}")
        if not results and (errors or made):
            raise Quit(ExitCode.UNAVAILABLE)
        return [(name, results[name]) for name in sorted(results)]

    def close(self) -> None:
        for b in [*self._loaded.values(), *self._elsewhere.values()]:
            b.close()


_CONTEXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
"""A context's name (:data:`cman.contexts.NAME_RE`, repeated so a plain ref imports nothing)."""


def backends_split(ref: str) -> tuple[str | None, str]:
    from ..validate import split_ref

    return split_ref(ref, backends.names())


def open_session(*, backend: str | None, lxcpath: str | None, context: str | None, debug: bool,
                 command: str | None) -> Session:
    """The run's session from the global options, for the typer app and :mod:`.quick` alike."""
    import os

    s = Session(backend_option=backend, debug=debug or bool(os.environ.get("CMAN_DEBUG")))
    if command != "context":  # `cman context ...` works whatever the current one is
        s.use_context(context)
    if lxcpath is not None:
        from ..validate import check_config_value

        # The lxc backend reads its path from the environment, as its subprocesses do.
        os.environ["CMAN_LXC_PATH"] = check_config_value("--lxcpath", lxcpath)
    return s


def session(ctx: typer.Context) -> Session:
    obj = ctx.find_root().obj
    if not isinstance(obj, Session):
        obj = Session()
        ctx.find_root().obj = obj
    return obj


def print_json(data: Any) -> None:
    """JSON on stdout. A list prints one item per line: ``indent`` would take the pure-Python
    encoder, ~80 us per stats row (20 ms for 250 rows, a fifth of ``stats --no-stream`` answered
    by the monitor), where one line per item is the C encoder's and reads as a table."""
    if isinstance(data, list) and data:
        items = ",\n".join("  " + json.dumps(item, default=str) for item in data)
        sys.stdout.write("[\n" + items + "\n]\n")
    else:
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
    from ..models import StdIO

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
