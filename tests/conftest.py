"""Shared fixtures: one conformance suite, parametrized over real engines.

- CMAN_TEST_ENGINES (default "docker,lxd,lxc") chooses the backends.
- CMAN_REQUIRE_ENGINES=1 (CI sets it) turns "engine unavailable" from a skip
  into a failure: in CI every engine is installed, so a skip would hide a break.
- Every resource a test makes is named with a per-run prefix and removed in
  teardown, also when the test fails.

Every skip of an engine test goes through this file: :func:`unavailable` (the one
engines-required rule), :func:`require_root` (root is part of what CI provides, so it
follows the same rule), :func:`not_selected` (an engine left out of CMAN_TEST_ENGINES on
purpose) and :func:`lacks` (a feature the backend declares it does not have, checked to
be refused). A test never calls ``pytest.skip`` itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

import cman
from cman.backends.base import Backend, Feature
from cman.errors import CmanError, Unsupported

ALL_ENGINES = ("docker", "lxd", "lxc")
ROOTFS = Path(os.environ.get("CMAN_TEST_ROOTFS", "/var/lib/cman/images/busybox-rootfs.tar.gz"))
REGISTRY = "127.0.0.1:5000"
REGISTRY_IMAGE = f"{REGISTRY}/cman/busybox:latest"
RUN_ID = secrets.token_hex(3)
PREFIX = f"cmantest-{RUN_ID}"
NET_PREFIX = f"cmt{RUN_ID}"
"""For names that must fit a bridge (LXD networks are their bridge: at most 15 characters)."""


def variant_rootfs(dest: Path, tag: str) -> Path:
    """A copy of the test rootfs with one more file: another image (another ID, another
    fingerprint) whose containers behave the same."""
    import io
    import tarfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(ROOTFS, "r:*") as src, tarfile.open(dest, "w:gz") as out:
        for member in src:
            out.addfile(member, src.extractfile(member) if member.isfile() else None)
        data = f"{tag}\n".encode()
        info = tarfile.TarInfo("etc/cman-variant")
        info.size, info.mode = len(data), 0o644
        out.addfile(info, io.BytesIO(data))
    return dest


def selected_engines() -> list[str]:
    raw = os.environ.get("CMAN_TEST_ENGINES", ",".join(ALL_ENGINES))
    return [e.strip() for e in raw.split(",") if e.strip()]


def engines_required() -> bool:
    return os.environ.get("CMAN_REQUIRE_ENGINES") == "1"


def unavailable(reason: str) -> NoReturn:
    """Fail in CI (engines must be up there), skip elsewhere."""
    if engines_required():
        pytest.fail(f"engine required but unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def require_root(what: str) -> None:
    """Root is part of what CI provides (bridges, iptables, cgroups): the same rule as an engine."""
    if os.geteuid() != 0:
        unavailable(f"{what} needs root")


def not_selected(name: str) -> None:
    """Skip a test of one engine when CMAN_TEST_ENGINES leaves that engine out on purpose."""
    if name not in selected_engines():
        pytest.skip(f"{name} is not in CMAN_TEST_ENGINES")


def lacks(backend: Backend, feature: Feature) -> None:
    """Skip when the backend declares it lacks ``feature``, after checking that it refuses it
    (exit 6), so a declared gap is tested rather than silently passed over."""
    if feature in backend.features():
        return
    with pytest.raises(Unsupported):
        backend.require(feature)
    pytest.skip(f"{backend.name} declares no {feature}")


def cli(*args: str, backend: str | None = None, input: str | bytes | None = None,  # noqa: A002
        env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k != "CMAN_BACKEND"}
    full_env.update(env or {})
    argv = [sys.executable, "-m", "cman"]
    if backend:
        argv += ["--backend", backend]
    data = input.decode() if isinstance(input, bytes) else input
    return subprocess.run(
        argv + list(args), capture_output=True, text=True, input=data, timeout=timeout, env=full_env,
        stdin=None if data is not None else subprocess.DEVNULL,
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """A user error: the documented exit code, one line on stderr, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cman: "), proc.stderr
    for needle in needles:
        assert needle.lower() in proc.stderr.lower(), (needle, proc.stderr)


@dataclass
class Engine:
    """A real engine under test, with the knobs where backends legitimately differ."""

    name: str
    backend: Backend
    image: str = ""
    """An image imported from the busybox rootfs with `cman image import`."""
    pull_ref: str | None = None
    """A ref that really pulls here (local registry, or a local template), if any."""
    unreachable_pull_ref: str | None = None
    """A ref whose source cannot be reached here (the daemons' egress goes to a dead proxy)."""
    missing_image: str = ""
    unreachable_env: dict[str, str] = field(default_factory=dict)
    """Environment that makes the engine unreachable (for the error tests)."""
    made: list[str] = field(default_factory=list)
    keep_pulled: bool = True
    """The pull test's image was there before the run: leave it."""

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return cli(*args, backend=self.name, **kw)

    def name_for(self, tag: str) -> str:
        name = f"{PREFIX}-{tag}-{secrets.token_hex(2)}"
        self.made.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.made:
            with contextlib.suppress(CmanError):
                self.backend.remove(name, force=True)
        self.made.clear()

    def state(self, name: str) -> str | None:
        proc = self.cli("ps", "-a", "--json")
        assert proc.returncode == 0, proc.stderr
        for item in json.loads(proc.stdout):
            if item["name"] == name:
                return str(item["state"])
        return None


def _make_engine(name: str) -> Engine:
    cls = cman.backends.backend_class(name)
    status = cls.probe()
    if not status.reachable:
        unavailable(f"{name}: {status.problem} (fix: {status.fix})")
    backend = cman.backend(name)
    missing = f"{PREFIX}-missing"
    if name == "docker":
        engine = Engine(name, backend, pull_ref=REGISTRY_IMAGE, missing_image=f"{REGISTRY}/cman/{missing}:1",
                        unreachable_pull_ref="127.0.0.1:9/cman/nothing:1",
                        unreachable_env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    elif name == "lxd":
        engine = Engine(name, backend, missing_image=missing, unreachable_pull_ref="images:debian/12",
                        unreachable_env={"LXD_DIR": "/nonexistent/lxd"})
    else:
        engine = Engine(name, backend, pull_ref="template:busybox", missing_image=missing,
                        unreachable_pull_ref="download:debian/12",
                        unreachable_env={"PATH": "/nonexistent-bin"})
    if not ROOTFS.is_file():
        unavailable(f"test rootfs {ROOTFS} is missing: run scripts/setup-engines.sh")
    if engine.pull_ref:
        try:
            backend.image_inspect(engine.pull_ref)
            engine.keep_pulled = True
        except CmanError:
            engine.keep_pulled = False
    image = f"{PREFIX}-bb"
    proc = cli("image", "import", str(ROOTFS), image, backend=name)
    if proc.returncode != 0:
        pytest.fail(f"{name}: cman image import failed: {proc.stderr}", pytrace=False)
    engine.image = image
    return engine


@pytest.fixture(scope="session", params=selected_engines())
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    eng = _make_engine(request.param)
    try:
        yield eng
    finally:
        eng.cleanup()
        with contextlib.suppress(CmanError):
            for c in eng.backend.containers(all=True):
                if c.name.startswith(PREFIX):
                    eng.backend.remove(c.name, force=True)
        with contextlib.suppress(CmanError):
            eng.backend.image_remove(eng.image, force=True)
        if eng.pull_ref and not eng.keep_pulled:
            with contextlib.suppress(CmanError):
                eng.backend.image_remove(eng.pull_ref, force=True)
        eng.backend.close()


@pytest.fixture
def eng(engine: Engine) -> Iterator[Engine]:
    """Per-test view of the engine: names made in the test are removed after it."""
    try:
        yield engine
    finally:
        engine.cleanup()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that restart the engines' daemons run after every other test (a stable sort),
    so nothing else meets a daemon that is coming back."""
    items.sort(key=lambda item: item.get_closest_marker("restarts") is not None)
