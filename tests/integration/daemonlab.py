"""What the soak and the engine-restart suites share: the busybox image imported into each
engine under one name, and a monitor daemon started through the real CLI and always stopped."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cman.backends import backend_class

from ..conftest import ROOTFS, cli, unavailable

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback is never reached through a proxy."""


def scrape(port: int, path: str = "/metrics") -> str:
    with NO_PROXY.open(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return str(resp.read().decode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def imported(engines: Iterable[str], image: str) -> Iterator[dict[str, str]]:
    """The test rootfs imported as ``image`` into each engine (engine -> image); removed after."""
    if not ROOTFS.is_file():
        unavailable(f"test rootfs {ROOTFS} is missing: run scripts/setup-engines.sh")
    made: dict[str, str] = {}
    try:
        for name in engines:
            status = backend_class(name).probe()
            if not status.reachable:
                unavailable(f"{name}: {status.problem} (fix: {status.fix})")
            proc = cli("image", "import", str(ROOTFS), image, backend=name)
            assert proc.returncode == 0, proc.stderr
            made[name] = image
        yield made
    finally:
        for name, made_image in made.items():
            cli("image", "rm", made_image, backend=name)


@dataclass(frozen=True)
class RunningMonitor:
    pid: int
    port: int
    state_file: Path
    """The samples file the daemon writes beside its pidfile."""


@contextlib.contextmanager
def running_monitor(folder: Path, interval: float) -> Iterator[RunningMonitor]:
    """``cman monitor start`` on a free loopback port; stopped after (SIGKILLed by PID when
    ``stop`` fails), and its log must hold no traceback."""
    port = free_port()
    pidfile, log = folder / "monitor.pid", folder / "monitor.log"
    proc = cli("monitor", "start", "--interval", f"{interval:g}", "--listen", f"127.0.0.1:{port}",
               "--pidfile", str(pidfile), "--log", str(log))
    assert proc.returncode == 0, proc.stderr
    pid = int(re.search(r"PID (\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
    try:
        yield RunningMonitor(pid, port, pidfile.with_suffix(".json"))
    finally:
        stopped = cli("monitor", "stop", "--pidfile", str(pidfile))
        with contextlib.suppress(ProcessLookupError):
            if stopped.returncode != 0:
                os.kill(pid, signal.SIGKILL)
        text = log.read_text(errors="replace") if log.exists() else ""
        assert "Traceback" not in text, text[-3000:]
