"""The shipped examples run clean on the real engines (what their README promises)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import require_root, selected_engines

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


def test_bridge_setup_example_isolates_on_every_backend() -> None:
    require_root("the bridge-setup example (bridges, iptables)")
    backends = [b for b in selected_engines() if b in ("docker", "lxd", "lxc")]
    env = {**os.environ, "CMAN": f"{sys.executable} -m cman", "BACKENDS": " ".join(backends)}
    env.pop("CMAN_BACKEND", None)
    proc = subprocess.run(["bash", str(ROOT / "examples" / "bridge-setup.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for backend in backends:
        assert f"== {backend}: network" in out
    # per backend: the gateway answers (ping and arping), the peer does not (neither)
    assert out.count("ping: yes  arping: yes") == len(backends), out
    assert out.count("ping: no   arping: no") == len(backends), out
    assert out.count("nameserver 192.0.2.53") == len(backends)
    assert "done: no network, bridge, container or rule of this run is left" in out
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert "cmdemo" not in links
