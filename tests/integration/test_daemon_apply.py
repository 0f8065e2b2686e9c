"""`cman engine configure docker --apply` for real: the daemon is restarted and must come
back with the setting, then daemon.json is restored byte for byte and the daemon restarted
again, so the machine ends as it started.

The setting changed is a registry mirror on loopback where nothing listens: it only
matters for pulls from Docker Hub, which no test makes, so tests running meanwhile on
this daemon see no difference. The test waits for the daemon to have no running
container (other tests' containers would be stopped by the restart). Every reason not to
run (no root, a systemd host, the mirror set already, a daemon that never goes idle) goes
through the engines-required rule of tests/conftest.py: a skip here, a failure in CI.
Kept in its own file so it can be run or deselected alone.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from cman import dockerd as dc
from cman.backends.docker import DockerBackend

from ..conftest import cli, require_root, unavailable

pytestmark = [pytest.mark.engine, pytest.mark.restarts]  # restarts dockerd: runs last

MIRROR = "http://127.0.0.1:5999/"


def _mirrors() -> list[str]:
    proc = subprocess.run(["docker", "info", "--format", "{{json .RegistryConfig.Mirrors}}"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout) or [])


def _wait_idle(timeout: float = 90) -> bool:
    """No running container on the daemon (a restart would stop them)."""
    backend = DockerBackend()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not backend.containers():
                return True
            time.sleep(1)
        return False
    finally:
        backend.close()


SETUP_PIDFILE = Path("/run/cman-dockerd.pid")
"""Where scripts/setup-engines.sh records the dockerd it started: cman must keep it current."""


def test_apply_restarts_dockerd_and_everything_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    if SETUP_PIDFILE.exists():
        monkeypatch.setenv(dc.ENV_PIDFILE, str(SETUP_PIDFILE))
    require_root("restarting dockerd")
    if dc.systemd_running():
        unavailable("written for hosts without systemd (systemctl restart is the other path)")
    if not DockerBackend.probe().reachable:
        unavailable("docker is not reachable")
    daemon = dc.find_dockerd()
    if daemon is None:
        unavailable("no local dockerd process")
    assert daemon is not None
    path = daemon.config_file()
    original, _ = dc.read_config(path)
    original_mode = path.stat().st_mode if original is not None else None
    if MIRROR in _mirrors():
        unavailable(f"{MIRROR} is already configured here (left by an earlier run?)")
    if not _wait_idle():
        unavailable("other tests keep containers running on this daemon; a restart would stop them")

    changed_daemon = False
    try:
        proc = cli("engine", "configure", "docker", "--config", str(path), "--registry-mirror", MIRROR, "--apply",
                   timeout=300)
        changed_daemon = True
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        assert f'+    "{MIRROR}"' in proc.stdout, proc.stdout
        assert f"stopping dockerd (pid {daemon.pid})" in proc.stdout
        assert "dockerd is back" in proc.stdout
        after = dc.find_dockerd()
        assert after is not None and after.pid != daemon.pid
        assert (after.argv, dict(after.env), after.cwd, after.log) == (daemon.argv, dict(daemon.env), daemon.cwd, daemon.log), \
            "started again the way it was started"
        assert MIRROR in _mirrors(), "the new setting is live"
        for pidfile in dc.wrapper_pidfiles():
            if pidfile.exists():
                assert pidfile.read_text().strip() == str(after.pid)

        same = cli("engine", "configure", "docker", "--config", str(path), "--registry-mirror", MIRROR, "--apply")
        assert same.returncode == 0, same.stderr
        assert "no change" in same.stdout and "not restarted" in same.stdout, same.stdout
        assert dc.find_dockerd() is not None and dc.find_dockerd().pid == after.pid  # type: ignore[union-attr]
    finally:
        dc.restore(path, original)
        if original_mode is not None:
            path.chmod(original_mode & 0o7777)
        if changed_daemon:
            _restart_back(daemon)
    assert (Path(path).read_text() if original is not None else None) == original
    assert not path.exists() or original is not None
    assert MIRROR not in _mirrors()
    assert dc.find_dockerd() is not None


def _restart_back(before: dc.DaemonProcess) -> None:
    """Restart with the restored file; if no dockerd runs at all, start it the way it was."""
    if dc.find_dockerd() is None:
        dc.start_like(before)
        assert dc.wait_for(dc.docker_answers, 90), "dockerd did not come back"
        return
    dc.restart_dockerd(timeout=120)
