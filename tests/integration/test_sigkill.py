"""A foreground `run` whose cman is SIGKILLed, on every engine: the job still ends its container,
`--rm` still removes it (the engine does: AutoRemove, ephemeral, lxc.ephemeral), and a kept
container still has the job's exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from ..conftest import Engine

pytestmark = pytest.mark.engine


def _wait(check: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _run_then_kill(eng: Engine, *args: str) -> None:
    """Start `cman run ARGS` in the foreground, wait until its container runs, SIGKILL cman."""
    env = {k: v for k, v in os.environ.items() if k != "CMAN_BACKEND"}
    name = args[args.index("--name") + 1]
    proc = subprocess.Popen([sys.executable, "-m", "cman", "--backend", eng.name, "run", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        _wait(lambda: eng.state(name) == "running" or proc.poll() is not None, f"{name} to run")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.5)  # the job is under way
    finally:
        proc.kill()
        proc.wait()


def test_run_rm_holds_when_cman_is_sigkilled(eng: Engine) -> None:
    name = eng.name_for("k9rm")
    _run_then_kill(eng, "--rm", "--name", name, eng.image, "sh", "-c", "sleep 3; exit 4")
    _wait(lambda: eng.state(name) is None, f"the engine to remove {name} once its job ended")


def test_a_killed_foreground_run_still_ends_its_container_with_the_code(eng: Engine) -> None:
    name = eng.name_for("k9keep")
    _run_then_kill(eng, "--name", name, eng.image, "sh", "-c", "sleep 3; exit 4")
    _wait(lambda: eng.state(name) == "stopped", f"{name} to stop once its job ended")
    assert eng.backend.inspect(name).exit_code == 4
    assert eng.backend.wait(name) == 4
