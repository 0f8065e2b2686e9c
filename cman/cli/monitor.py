"""``cman monitor start|stop|restart|status|run``: the CPU monitor daemon (cman.monitor).

The monitor samples every container each interval and serves Prometheus metrics; a
running one also lets ``cman stats --no-stream`` answer at once from its samples.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import ExitCode
from ._common import print_json, session, warn

if TYPE_CHECKING:
    from ..monitor import MonitorConfig

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Interval = Annotated[str, typer.Option("--interval", metavar="SEC", help="Seconds between samples (> 0).")]
def _pidfile(value: Path | None) -> Path | None:
    from ..monitor.config import check_pidfile

    return check_pidfile(value)


PidfileOpt = Annotated[Path | None, typer.Option("--pidfile", metavar="PATH", callback=_pidfile, help="Monitor pidfile (default $CMAN_MONITOR_PIDFILE, else /run/cman/monitor.pid for root).")]
ListenOpt = Annotated[str, typer.Option("--listen", metavar="IP:PORT", help="IP:PORT for the metrics server (default 127.0.0.1:9464, loopback).")]
LogOpt = Annotated[Path | None, typer.Option("--log", metavar="PATH", help="Append the daemon's log here (default: /dev/null; `run`: stderr).")]


def _config(ctx: typer.Context, interval: str, listen: str, pidfile: Path | None, log: Path | None) -> MonitorConfig:
    from .. import backends
    from ..monitor import MonitorConfig, is_loopback, parse_listen
    from ..validate import parse_interval

    s = session(ctx)
    address = parse_listen(listen)
    if not is_loopback(address[0]):
        warn(f"the metrics server will listen on {address[0]}, beyond loopback: other machines can read it")
    backends.explicit_name(s.backend_option)  # a bad --backend fails now, not in the daemon
    return MonitorConfig(
        interval=parse_interval(interval), listen=address, pidfile=pidfile, log=log, backend_option=s.backend_option
    ).checked()


def _start(config: MonitorConfig) -> None:
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


def register(app: typer.Typer, only: str | None = None) -> None:
    """Add the ``monitor`` group to ``app`` (when ``only`` is None or "monitor")."""
    if only not in (None, "monitor"):
        return
    monitor_app = typer.Typer(
        help="The CPU monitor daemon: Prometheus metrics and instant `cman stats`.", no_args_is_help=True
    )

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

    app.add_typer(monitor_app, name="monitor")
