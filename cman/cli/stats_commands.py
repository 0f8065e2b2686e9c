"""The typer declarations of ``stats`` and ``top``: their options and help; the work is in :mod:`.stats`."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import only_command as _only
from ._common import session
from .monitor import PidfileOpt
from .stats import stats as sample
from .stats import top as watch

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Names = Annotated[list[str] | None, typer.Argument(help="NAME or BACKEND:NAME (default: the running containers cman manages).", show_default=False)]
All = Annotated[bool, typer.Option("--all", "-a", help="Every container, also unmanaged and stopped ones.")]
Interval = Annotated[str, typer.Option("--interval", metavar="SEC", help="Seconds between samples (> 0).")]
Cgroup = Annotated[str, typer.Option("--cgroup", metavar="auto|v1|v2", help="Counters to read: auto, v1 or v2 (auto prefers v2 where the container has one).")]


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
        sample(session(ctx), names=names, all_=all_, no_stream=no_stream, interval=interval, as_json=as_json,
               cgroup=cgroup, no_monitor=no_monitor, pidfile=pidfile)

    @command("top")
    def top(
        ctx: typer.Context,
        names: Names = None,
        all_: All = False,
        interval: Interval = "1",
        cgroup: Cgroup = "auto",
    ) -> None:
        """Full-screen live view sorted by CPU, with recent history; q or Ctrl-C quits."""
        watch(session(ctx), names=names, all_=all_, interval=interval, cgroup=cgroup)
