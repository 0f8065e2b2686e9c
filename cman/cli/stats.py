"""CPU accounting commands: ``stats``, ``top`` and ``monitor start|stop|restart|status|run``.

``stats --no-stream`` answers from a running monitor's samples when they are fresh
(no engine call, no wait); otherwise it lists each backend once, reads every
container's cgroup, waits ``--interval`` and reads again. rich is imported only to
draw on a terminal (streaming ``stats`` and ``top``).
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import AmbiguousName, CmanError, ExitCode, InvalidValue, UsageError
from ._common import Session, backends_split, print_json, print_table, session, warn
from ._common import only_command as _only

if TYPE_CHECKING:
    from ..cgroups import Prefer
    from ..monitor import MonitorState
    from ..stats import Selection, Snapshot, StatsCollector

# `stats --no-stream` with a monitor running reads one JSON file and prints: that path
# imports neither cman.stats nor cman.cgroups (their dataclasses cost ~20 ms to create).
# Rows are the JSON objects of `cman stats --json` (ContainerStats.to_dict()).
Row = dict[str, Any]
Key = tuple[str, str]

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Names = Annotated[list[str] | None, typer.Argument(help="NAME or BACKEND:NAME (default: the running containers cman manages).", show_default=False)]
All = Annotated[bool, typer.Option("--all", "-a", help="Every container, also unmanaged and stopped ones.")]
Interval = Annotated[str, typer.Option("--interval", metavar="SEC", help="Seconds between samples (> 0).")]
Cgroup = Annotated[str, typer.Option("--cgroup", metavar="auto|v1|v2", help="Counters to read: auto, v1 or v2 (auto prefers v2 where the container has one).")]
PidfileOpt = Annotated[Path | None, typer.Option("--pidfile", metavar="PATH", help="Monitor pidfile (default $CMAN_MONITOR_PIDFILE, else /run/cman/monitor.pid for root).")]
ListenOpt = Annotated[str, typer.Option("--listen", metavar="IP:PORT", help="IP:PORT for the metrics server (default 127.0.0.1:9464, loopback).")]
LogOpt = Annotated[Path | None, typer.Option("--log", metavar="PATH", help="Append the daemon's log here (default: /dev/null; `run`: stderr).")]

HEADERS = ("NAME", "BACKEND", "CPU %", "USER %", "SYS %", "CPU TIME", "PID", "STATUS")
UNKNOWN = "--"
SPARKS = "▁▂▃▄▅▆▇█"


# -- formatting (pure; unit-tested with fake samples) ----------------------------------------


def fmt_percent(value: float | None) -> str:
    """``12.34%``; unknown is ``--``, never ``0.00%``."""
    return UNKNOWN if value is None else f"{value:.2f}%"


def fmt_cpu_time(ns: int | None) -> str:
    """Cumulative CPU time: ``0.42s``, ``3m05s``, ``2h03m``."""
    if ns is None:
        return UNKNOWN
    seconds = ns / 1e9
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def status_text(row: Row) -> str:
    """The container's state when the sample is fine, else why it has no rates."""
    return str(row["state"] if row["status"] == "ok" else row["status"])


def table_row(row: Row) -> list[str]:
    pid = row.get("pid")
    return [
        str(row["name"]),
        str(row["backend"]),
        fmt_percent(row.get("cpu_percent")),
        fmt_percent(row.get("cpu_user_percent")),
        fmt_percent(row.get("cpu_system_percent")),
        fmt_cpu_time(row.get("cpu_usage_ns")),
        "" if pid is None else str(pid),
        status_text(row),
    ]


def by_name(rows: Iterable[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r["backend"], r["name"]))


def by_cpu(rows: Iterable[Row]) -> list[Row]:
    """Busiest first; unknown rates last, then by backend and name."""
    return sorted(rows, key=lambda r: (r.get("cpu_percent") is None, -(r.get("cpu_percent") or 0.0), r["backend"], r["name"]))


def sparkline(values: Iterable[float | None], width: int = 20, scale: float = 100.0) -> str:
    """Recent CPU % as block characters, oldest left; 100 % (one CPU) is a full block.

    Unknown samples are blank; the line is right-aligned to ``width``.
    """
    out = []
    for v in list(values)[-width:]:
        if v is None:
            out.append(" ")
        else:
            out.append(SPARKS[min(len(SPARKS) - 1, max(0, round(min(v, scale) / scale * (len(SPARKS) - 1))))])
    return "".join(out).rjust(width)


def backend_totals(rows: Iterable[Row]) -> dict[str, tuple[int, float | None]]:
    """Backend -> (running containers, summed CPU % or None while every rate is unknown)."""
    totals: dict[str, tuple[int, float | None]] = {}
    for r in rows:
        count, total = totals.get(r["backend"], (0, None))
        if r.get("pid") is not None:
            count += 1
        if r.get("cpu_percent") is not None:
            total = (total or 0.0) + r["cpu_percent"]
        totals[r["backend"]] = (count, total)
    return totals


def totals_line(rows: Sequence[Row]) -> str:
    parts = []
    for backend, (count, total) in sorted(backend_totals(rows).items()):
        parts.append(f"{backend}: {count} running, {fmt_percent(total)}")
    return "   ".join(parts) if parts else "no containers"


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
    container, or has only a first (rate-less) sample for one of them.
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
    elif not all_:
        rows = [r for r in rows if r.get("managed") and r["state"] in ("running", "paused", "restarting")]
    if any(r["status"] == "first" for r in rows):
        return None
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


def _rich_table(rows: Sequence[Row], history: dict[Key, deque[float | None]] | None = None, width: int = 0) -> Any:
    """A table for rich; with ``history``, a sparkline column as wide as the terminal allows."""
    from rich.table import Table

    cells = [table_row(r) for r in rows]
    spark = 0
    if history is not None:
        # Numbers and names keep their full width; the sparkline takes what is left (up to 30).
        used = sum(max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(HEADERS)) + 2 * len(HEADERS)
        spark = min(30, width - used) if width else 20
        if spark < 8:
            spark = 0
    table = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    for h in HEADERS:
        table.add_column(h, justify="right" if h in ("CPU %", "USER %", "SYS %", "CPU TIME", "PID") else "left", no_wrap=True)
    if spark:
        table.add_column("CPU % HISTORY", no_wrap=True, width=max(spark, len("CPU % HISTORY")))
    for r, row_cells in zip(rows, cells, strict=True):
        if spark and history is not None:
            row_cells = [*row_cells, sparkline(history.get((r["backend"], r["id"]), ()), width=spark)]
        table.add_row(*row_cells)
    return table


# -- commands ------------------------------------------------------------------------------


def register(app: typer.Typer, only: str | None = None) -> None:
    """Define the commands; add to ``app`` only ``only`` when given."""
    command = _only(app, only)

    @command("stats")
    def stats(
        ctx: typer.Context,
        names: Names = None,
        all_: All = False,
        no_stream: Annotated[bool, typer.Option("--no-stream", help="Sample once over --interval and exit.")] = False,
        interval: Interval = "1",
        as_json: Json = False,
        cgroup: Cgroup = "auto",
        no_monitor: Annotated[bool, typer.Option("--no-monitor", help="Sample directly even when a monitor runs.")] = False,
        pidfile: PidfileOpt = None,
    ) -> None:
        """CPU use per container, refreshed in place like `docker stats` (100% = one CPU).

        By default the running containers cman manages on every reachable backend;
        --all adds every other container. Rates need two samples: unknown is shown
        as "--" (null in JSON), never 0. Streaming with --json prints one JSON array
        per refresh, one per line. With --no-stream, a running `cman monitor` answers
        at once from its latest samples (JSON "sampled_by": "monitor").
        """
        from ..stats import parse_interval

        s = session(ctx)
        seconds = parse_interval(interval)
        prefer = _prefer(cgroup)
        names = names or []
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
            raise typer.Exit(0) from None

    @command("top")
    def top(
        ctx: typer.Context,
        names: Names = None,
        all_: All = False,
        interval: Interval = "1",
        cgroup: Cgroup = "auto",
    ) -> None:
        """Full-screen live view sorted by CPU, with recent history; q or Ctrl-C quits."""
        from ..stats import parse_interval

        s = session(ctx)
        seconds = parse_interval(interval)
        prefer = _prefer(cgroup)
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise UsageError("cman top needs a terminal", hint="use `cman stats --no-stream` (or --json) in scripts")
        from ..stats import StatsCollector

        collector = StatsCollector(s, _selection(s, names or [], all_), prefer=prefer)
        _top(collector, seconds)

    monitor_app = typer.Typer(
        help="The CPU monitor daemon: Prometheus metrics and instant `cman stats`.", no_args_is_help=True
    )

    def _config(ctx: typer.Context, interval: str, listen: str, pidfile: Path | None, log: Path | None) -> Any:
        from .. import backends
        from ..monitor import MonitorConfig, is_loopback, parse_listen
        from ..stats import parse_interval

        s = session(ctx)
        address = parse_listen(listen)
        if not is_loopback(address[0]):
            warn(f"the metrics server will listen on {address[0]}, beyond loopback: other machines can read it")
        backends.explicit_name(s.backend_option)  # a bad --backend fails now, not in the daemon
        return MonitorConfig(
            interval=parse_interval(interval), listen=address, pidfile=pidfile, log=log, backend_option=s.backend_option
        ).checked()

    def _start(config: Any) -> None:
        from ..monitor import format_listen, start

        pid = start(config)
        sys.stdout.write(
            f"cman monitor started: PID {pid}, metrics on http://{format_listen(config.listen)}/metrics,"
            f" pidfile {config.pidfile}\n"
        )

    def _stop(pidfile: Path | None, timeout: float) -> None:
        from ..monitor import stop

        pid = stop(pidfile, timeout)
        if pid is None:
            sys.stderr.write("cman: monitor is not running\n")
        else:
            sys.stdout.write(f"cman monitor stopped (PID {pid})\n")

    @monitor_app.command("start")
    def monitor_start(
        ctx: typer.Context,
        interval: Interval = "1",
        listen: ListenOpt = "127.0.0.1:9464",
        pidfile: PidfileOpt = None,
        log: LogOpt = None,
    ) -> None:
        """Start the daemon in the background (exit 4 if one already runs, with its PID)."""
        _start(_config(ctx, interval, listen, pidfile, log))

    @monitor_app.command("stop")
    def monitor_stop(
        pidfile: PidfileOpt = None,
        timeout: Annotated[float, typer.Option("--timeout", "-t", help="Seconds to wait after SIGTERM before SIGKILL.")] = 10,
    ) -> None:
        """SIGTERM the daemon and wait until it is gone (exit 0 also when it was not running)."""
        _stop(pidfile, timeout)

    @monitor_app.command("restart")
    def monitor_restart(
        ctx: typer.Context,
        interval: Interval = "1",
        listen: ListenOpt = "127.0.0.1:9464",
        pidfile: PidfileOpt = None,
        log: LogOpt = None,
    ) -> None:
        """Stop the daemon if it runs, then start it with these options."""
        config = _config(ctx, interval, listen, pidfile, log)
        _stop(config.pidfile, 10)
        _start(config)

    @monitor_app.command("status")
    def monitor_status(pidfile: PidfileOpt = None, as_json: Json = False) -> None:
        """Say whether the daemon runs: exit 0 running, 3 stopped (LSB)."""
        from ..monitor import status

        st = status(pidfile)
        if as_json:
            print_json(st.to_dict())
        elif st.running:
            pid = f"PID {st.pid}" if st.pid else "PID unknown"
            line = f"cman monitor is running ({pid})"
            if st.state is not None:
                line += (f", metrics on http://{st.state.listen}/metrics, {len(st.state.rows)} containers,"
                         f" last sample {st.state.age_s:.1f}s ago")
            sys.stdout.write(line + "\n")
        else:
            sys.stdout.write(f"cman monitor is stopped (no lock on {st.pidfile})\n")
        if not st.running:
            raise typer.Exit(int(ExitCode.NOT_FOUND))  # 3: LSB "program is not running"

    @monitor_app.command("run")
    def monitor_run(
        ctx: typer.Context,
        interval: Interval = "1",
        listen: ListenOpt = "127.0.0.1:9464",
        pidfile: PidfileOpt = None,
        log: LogOpt = None,
    ) -> None:
        """Run in the foreground (for systemd: examples/cman-monitor.service); SIGTERM stops it."""
        from ..monitor import run_foreground

        run_foreground(_config(ctx, interval, listen, pidfile, log))

    if only in (None, "monitor"):
        app.add_typer(monitor_app, name="monitor")


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
            live.update(_rich_table(by_name(_rows(snapshot))), refresh=True)


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
                live.update(Group(header, Text(""), _rich_table(rows, history, console.width), Text(""), footer), refresh=True)
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
