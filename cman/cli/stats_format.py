"""How ``cman stats`` and ``cman top`` draw rows: pure functions, unit-tested with fake samples.

Rows are the JSON objects of ``cman stats --json`` (``ContainerStats.to_dict()``): the
same whether this process sampled them or a running monitor did, so the fast
``stats --no-stream`` path imports neither cman.stats nor cman.cgroups. rich is
imported only to draw on a terminal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

Row = dict[str, Any]
Key = tuple[str, str]
"""(backend, container id): a container's history in ``top``."""

HEADERS = ("NAME", "BACKEND", "CPU %", "USER %", "SYS %", "CPU TIME", "PID", "STATUS")
UNKNOWN = "--"
SPARKS = "▁▂▃▄▅▆▇█"


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


def rich_table(rows: Sequence[Row], history: dict[Key, deque[float | None]] | None = None, width: int = 0) -> Any:
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
