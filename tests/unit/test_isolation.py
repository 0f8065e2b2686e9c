"""network.isolation.enforce: what it says when isolation, and then the stop, fail (no host tool runs)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cman.errors import EngineError
from cman.network import isolation


@pytest.fixture(autouse=True)
def cannot_isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(pid: int, bridge: str) -> str:
        raise EngineError(f"bridge {bridge}: operation not permitted")

    monkeypatch.setattr(isolation, "isolate_container", refuse)
    monkeypatch.setattr(isolation, "bridge_ports", lambda bridge: {})


PORTS = [isolation.Port("web", "br-web")]
LIVE = os.getpid()
"""A process that exists, standing for a running container's init."""


def test_a_stopped_container_is_said_stopped() -> None:
    stopped: list[bool] = []
    with pytest.raises(EngineError, match=r"lxd: c1 was stopped: cannot isolate it on its no-ICC network web") as err:
        isolation.enforce("lxd", "c1", LIVE, PORTS, lambda: stopped.append(True))
    assert stopped == [True]
    assert "operation not permitted" in str(err.value)


def test_a_container_that_could_not_be_stopped_is_not_said_stopped() -> None:
    def stop() -> None:
        raise EngineError("lxd: the daemon is gone")

    with pytest.raises(EngineError) as err:
        isolation.enforce("lxd", "c1", LIVE, PORTS, stop)
    text = str(err.value)
    assert "was stopped" not in text
    assert "could not be stopped either" in text and "the daemon is gone" in text
    assert "may be running without isolation" in text and "cman stop lxd:c1" in text
    assert "\n" not in text


def test_a_container_whose_init_is_gone_needs_no_isolation() -> None:
    """`run --network noicc IMAGE true`: the job ended before cman found its veth. The engine
    took the veth away with it, so there is nothing to isolate, stop or report."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    def stop() -> None:
        raise AssertionError("a container that has ended is not stopped")

    assert isolation.enforce("docker", "c1", gone.pid, PORTS, stop) == []
