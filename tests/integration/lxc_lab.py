"""A private raw-LXC lab for the LXC integration tests: its own LXC path and image store.

``$CMAN_LXC_PATH`` and ``$CMAN_LXC_IMAGES`` point into a temporary folder, so a test can
neither see nor disturb other containers. The folder is mode 0711: an unprivileged
container's root (a subordinate id of the host) must pass through it to reach its rootfs.
Everything is named ``RUN-...`` (``cmantest-<random>``) and removed on exit, also when a
test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from cman.backends.lxc import LxcBackend
from cman.backends.lxc.tools import ENV_IMAGES, ENV_LXC_PATH
from cman.errors import CmanError
from cman.network import read_host

from ..conftest import ROOTFS, cli, unavailable

RUN = f"cmantest-{secrets.token_hex(3)}"


@dataclass
class Lxc:
    lxcpath: Path
    images: Path
    env: dict[str, str]
    backend: LxcBackend
    image: str

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return cli(*args, backend="lxc", env={**self.env, **kw.pop("env", {})}, **kw)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, **self.env}
        env.pop("CMAN_BACKEND", None)
        return subprocess.Popen([sys.executable, "-m", "cman", "--backend", "lxc", *args], env=env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def name(self, tag: str) -> str:
        return f"{RUN}-{tag}-{secrets.token_hex(2)}"

    def ls(self) -> dict[str, tuple[str, str]]:
        """{name: (STATE, PID)} straight from lxc-ls, not from cman."""
        out = subprocess.run(["lxc-ls", "-P", str(self.lxcpath), "-f", "-F", "NAME,STATE,PID"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return {p[0]: (p[1], p[2]) for p in (line.split() for line in out.splitlines()[1:]) if len(p) >= 3}

    def state(self, name: str) -> str | None:
        items = json.loads(self.cli("ps", "-a", "--json").stdout)
        return next((str(i["state"]) for i in items if i["name"] == name), None)


@contextlib.contextmanager
def private_lxc() -> Iterator[Lxc]:
    """The lab; unavailable() (the engines-required rule) when LXC or the test rootfs is missing."""
    status = LxcBackend.probe()
    if not status.reachable:
        unavailable(f"lxc: {status.problem} (fix: {status.fix})")
    if not ROOTFS.is_file():
        unavailable(f"{ROOTFS} missing: run scripts/setup-engines.sh")
    top = Path(tempfile.mkdtemp(prefix=f"{RUN}-"))
    top.chmod(0o711)
    lxcpath, images = top / "lxc", top / "images"
    lxcpath.mkdir()
    env = {ENV_LXC_PATH: str(lxcpath), ENV_IMAGES: str(images)}
    with mock.patch.dict(os.environ, env):
        backend = LxcBackend()
    lab = Lxc(lxcpath, images, env, backend, f"{RUN}-bb")
    try:
        proc = lab.cli("image", "import", str(ROOTFS), lab.image)
        assert proc.returncode == 0, proc.stderr
        yield lab
    finally:
        for entry in sorted(lxcpath.iterdir()) if lxcpath.exists() else []:
            if entry.is_dir() and not entry.name.startswith("."):
                with contextlib.suppress(CmanError):
                    backend.remove(entry.name, force=True)
                subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", entry.name, "-k"], capture_output=True,
                               timeout=60, check=False)
                subprocess.run(["lxc-destroy", "-P", str(lxcpath), "-n", entry.name], capture_output=True,
                               timeout=60, check=False)
        shutil.rmtree(top, ignore_errors=True)


def wait_for(pred: Callable[[], Any], timeout: float = 20, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(step)


def free_subnet(avoid: set[str]) -> ipaddress.IPv4Network:
    """A /24 of 10.203.0.0/16 with a random third octet, free on this host (and added to ``avoid``)."""
    taken = [r.net for r in read_host().routes]
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.203.{random.randint(1, 254)}.0/24")
        if str(net) not in avoid and not any(net.overlaps(t) for t in taken):
            avoid.add(str(net))
            return net
    raise AssertionError("no free /24 in 10.203.0.0/16")
