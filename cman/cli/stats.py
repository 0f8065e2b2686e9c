"""CPU accounting commands: ``stats`` and ``top`` (``monitor`` is in :mod:`.monitor`), without
typer: :mod:`.quick` runs ``stats`` as it is; their options are declared in :mod:`.stats_commands`.

``stats --no-stream`` answers from a running monitor's samples when they are fresh
(no engine call, no wait); otherwise it lists each backend once, reads every
container's cgroup, waits ``--interval`` and reads again. How rows look is
:mod:`.stats_format`; rich is imported only to draw on a terminal (streaming
``stats`` and ``top``).
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AmbiguousName, CmanError, InvalidValue, UsageError
from ._common import Session, backends_split, print_json, print_table, warn
from .stats_format import HEADERS, Key, Row, by_cpu, by_name, rich_table, table_row, totals_line

if TYPE_CHECKING:
    from ..cgroups import Prefer
    from ..monitor import MonitorState
    from ..stats import Selection, Snapshot, StatsCollector

# `stats --no-stream` with a monitor running reads one JSON file and prints: that path
# imports neither cman.stats nor cman.cgroups (their dataclasses cost ~20 ms to create).

# -- selection ------------------------------------------------------------------------------


def _prefer(value: str) -> Prefer:
    if value not in ("auto", "v1", "v2"):
        raise InvalidValue("--cgroup", value, "choose auto, v1 or v2")
    return value  # type: ignore[return-value]


def _selection(s: Session, names: Sequence[str], all_: bool) -> Selection:
    """NAME or BACKEND:NAME -> (backend, name) through the session's resolution rules."""
    from ..stats import Selection

    refs: list[tuple[str, str]] = []
    for ref in dict.fromkeys(names):
        backend, name = s.resolve(ref)
        refs.append((backend.name, name))
    return Selection(all=all_, refs=tuple(refs))


def _matches(row: Row, ref: str) -> bool:
    return ref in (row["name"], row["id"]) or (len(ref) >= 12 and str(row["id"]).startswith(ref))


def select_from_monitor(
    state: MonitorState, names: Sequence[str], all_: bool, explicit: str | None, needed: Sequence[str] = ()
) -> list[Row] | None:
    """The monitor's rows for this request, or None when it cannot answer it exactly.

    It cannot when it did not ask a backend that direct sampling would ask (the
    chosen one, or every reachable one: ``needed``), does not know a named
    container, or has only a first (rate-less) sample for one of them. A listing
    keeps a container the monitor has seen once with its rate unknown (``--``, as
    a listing shows a container that has just started): on a busy host some
    container is always that new, and the listing would never come from the monitor.
    """
    if not set(needed) | ({explicit} if explicit else set()) <= set(state.backends):
        return None
    rows = [r for r in state.rows if explicit is None or r["backend"] == explicit]
    if names:
        chosen: list[Row] = []
        for ref in dict.fromkeys(names):
            prefix, name = backends_split(ref)
            hits = [r for r in rows if (prefix is None or r["backend"] == prefix) and _matches(r, name)]
            backends = sorted({str(r["backend"]) for r in hits})
            if not hits:
                return None
            if len(backends) > 1:
                raise AmbiguousName(name, backends)
            if hits[0] not in chosen:
                chosen.append(hits[0])
        rows = chosen
        if any(r["status"] == "first" for r in rows):
            return None
    elif not all_:
        rows = [r for r in rows if r.get("managed") and r["state"] in ("running", "paused", "restarting")]
    return rows


def _from_monitor(s: Session, names: Sequence[str], all_: bool, pidfile: Path | None) -> list[Row] | None:
    from ..monitor import read_state

    state = read_state(pidfile)
    if state is None or not state.fresh:
        return None
    explicit = s.explicit_backend()
    try:
        needed = [explicit] if explicit else s.listing_backends()  # socket connects, no engine call
    except CmanError:
        return None  # let direct sampling say what is wrong
    return select_from_monitor(state, names, all_, explicit, needed)


class _Warner:
    """Say each backend problem once, not at every refresh."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, snapshot: Snapshot) -> None:
        for backend, message in snapshot.errors.items():
            if self.seen.get(backend) != message:
                warn(f"{backend}: {message}")
                self.seen[backend] = message


def _ticks(collector: StatsCollector, interval: float) -> Iterator[Snapshot]:
    """A snapshot now, then one every ``interval`` seconds (no drift, no pile-up)."""
    next_at = time.monotonic()
    while True:
        yield collector.tick()
        next_at += interval
        now = time.monotonic()
        if next_at < now:
            next_at = now + interval
        time.sleep(next_at - now)


def _rows(snapshot: Snapshot) -> list[Row]:
    return [r.to_dict() for r in snapshot.rows]


def _print_rows(rows: Sequence[Row], as_json: bool) -> None:
    if as_json:
        print_json(list(rows))
    else:
        print_table(HEADERS, [table_row(r) for r in rows])

def _in_contexts(s: Session, names: Sequence[str], all_: bool, no_stream: bool, seconds: float, prefer: Prefer,
                 as_json: bool) -> None:
    """``stats --context all --no-stream``: each context's own collection, all at once, with a
    CONTEXT column (a ``context`` key) first; exit 0 when at least one context answered."""
    from ..stats import Selection, StatsCollector

    if not no_stream or names:
        raise UsageError("stats --context all samples every context once, without names",
                         hint="add --no-stream, and name containers as CONTEXT/NAME in `cman --context C stats`")
    found = s.each_context(lambda b: by_name(_rows(StatsCollector(
        s.for_backend(b), Selection(all=all_, refs=()), prefer=prefer).measure(seconds))))
    if as_json:
        print_json([{"context": where, **row} for where, rows in found for row in rows])
    else:
        print_table(["CONTEXT", *HEADERS], [[where, *table_row(row)] for where, rows in found for row in rows])


# -- commands ----------------------------------------------------------------------------------


def stats(s: Session, *, names: Sequence[str] | None = None, all_: bool = False, no_stream: bool = False,
          interval: str = "1", as_json: bool = False, cgroup: str = "auto", no_monitor: bool = False,
          pidfile: Path | None = None) -> None:
    """``cman stats``: see its help in :mod:`.stats_commands`."""
    from ..validate import parse_interval

    seconds = parse_interval(interval)
    prefer = _prefer(cgroup)
    names = names or []
    if s.all_contexts:
        _in_contexts(s, names, all_, no_stream, seconds, prefer, as_json)
        return
    if no_stream and not no_monitor and prefer == "auto":
        rows = _from_monitor(s, names, all_, pidfile)
        if rows is not None:
            _print_rows(rows if names else by_name(rows), as_json)
            return
    from ..stats import StatsCollector

    collector = StatsCollector(s, _selection(s, names, all_), prefer=prefer)
    warner = _Warner()
    if no_stream:
        snapshot = collector.measure(seconds)
        warner(snapshot)
        _print_rows(_rows(snapshot) if names else by_name(_rows(snapshot)), as_json)
        return
    try:
        _stream(collector, seconds, as_json, warner)
    except KeyboardInterrupt:
        return


def top(s: Session, *, names: Sequence[str] | None = None, all_: bool = False, interval: str = "1",
        cgroup: str = "auto") -> None:
    """``cman top``: see its help in :mod:`.stats_commands`."""
    from ..validate import parse_interval

    seconds = parse_interval(interval)
    prefer = _prefer(cgroup)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("cman top needs a terminal", hint="use `cman stats --no-stream` (or --json) in scripts")
    from ..stats import StatsCollector

    collector = StatsCollector(s, _selection(s, names or [], all_), prefer=prefer)
    _top(collector, seconds)


# -- drawing ------------------------------------------------------------------------------------


def _stream(collector: StatsCollector, interval: float, as_json: bool, warner: _Warner) -> None:
    """Streaming ``stats``: in place on a terminal, else one table (or JSON array per line) per tick."""
    if as_json or not sys.stdout.isatty():
        for snapshot in _ticks(collector, interval):
            warner(snapshot)
            rows = by_name(_rows(snapshot))
            if as_json:
                sys.stdout.write(json.dumps(rows) + "\n")
            else:
                print_table(HEADERS, [table_row(r) for r in rows])
                sys.stdout.write("\n")
            sys.stdout.flush()
        return
    from rich.console import Console
    from rich.live import Live

    console = Console(highlight=False)
    with Live(console=console, auto_refresh=False, transient=False) as live:
        for snapshot in _ticks(collector, interval):
            warner(snapshot)
            live.update(rich_table(by_name(_rows(snapshot))), refresh=True)


def _top(collector: StatsCollector, interval: float) -> None:
    """Full screen, busiest first, with a sparkline per container; q or Ctrl-C quits cleanly."""
    import os
    import select
    import termios
    import tty

    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    history: dict[Key, deque[float | None]] = {}
    console = Console(highlight=False)
    warner = _Warner()
    try:
        tty.setcbreak(fd)  # keys arrive one by one, unechoed; Ctrl-C still raises KeyboardInterrupt
        with Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
            next_at = time.monotonic()
            while True:
                snapshot = collector.tick()
                warner(snapshot)
                rows = by_cpu(_rows(snapshot))
                seen = set()
                for r in rows:
                    key = (r["backend"], r["id"])
                    seen.add(key)
                    history.setdefault(key, deque(maxlen=60)).append(r["cpu_percent"])
                for key in set(history) - seen:
                    del history[key]
                header = Text.assemble(
                    ("cman top", "bold"),
                    f"  {time.strftime('%H:%M:%S')}  every {interval:g}s  100% = one CPU\n",
                    totals_line(rows),
                )
                footer = Text("q: quit", style="dim")
                live.update(Group(header, Text(""), rich_table(rows, history, console.width), Text(""), footer), refresh=True)
                next_at += interval
                while (remaining := next_at - time.monotonic()) > 0:
                    if select.select([fd], [], [], remaining)[0]:
                        key_bytes = os.read(fd, 64)
                        if not key_bytes or b"q" in key_bytes.lower():
                            return
                if next_at < time.monotonic():
                    next_at = time.monotonic()
    except KeyboardInterrupt:
        return
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

