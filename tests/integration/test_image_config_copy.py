"""An image's config across engines and for ``exec``, and the OCI layout's housekeeping, on the
real engines: ``image copy`` keeps Entrypoint, Cmd, Env, WorkingDir and User (docker -> lxd,
lxc and back); ``exec`` on LXD and LXC runs in the image's WorkingDir as its User, as
``docker exec`` does; ``image prune`` on LXC drops layout tags of images no engine has and
frees their blobs (real skopeo and umoci, a private layout), never while a pull holds it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import cman
from cman.errors import CmanError, InvalidValue
from cman.models import ImageConfig
from cman.oci import layout as oci_layout
from cman.oci.refs import parse

from ..conftest import PREFIX, ROOTFS, assert_clean_error, cli, unavailable

REGISTRY = "127.0.0.1:5000"
CONFIGURED = f"{REGISTRY}/cman/configured:latest"
SIBLING = f"{REGISTRY}/cman/configured:extra"
EXPECTED = ["greeting=hello from the image config second=two", "cwd=/srv/app", "uid=1234 gid=2345", "args=one two"]
ENGINES = ("docker", "lxd", "lxc")


def _require(*engines: str) -> None:
    for name in engines:
        status = cman.backends.backend_class(name).probe()
        if not status.reachable:
            unavailable(f"{name}: {status.problem} (fix: {status.fix})")


def _in_registry(repo: str, tag: str) -> None:
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        with opener.open(f"http://{REGISTRY}/v2/{repo}/tags/list", timeout=5) as answer:
            if f'"{tag}"' in answer.read().decode():
                return
    except OSError as err:
        unavailable(f"the local registry {REGISTRY} does not answer ({err}): run scripts/setup-engines.sh")
    unavailable(f"{repo}:{tag} is not in the local registry: run scripts/setup-engines.sh")


@pytest.fixture
def made() -> Iterator[list[tuple[str, str]]]:
    """(engine, image) pairs to remove afterwards, with the test's containers, even on failure."""
    images: list[tuple[str, str]] = []
    yield images
    for engine in ENGINES:
        with contextlib.suppress(CmanError):
            backend = cman.backend(engine)
            for c in backend.containers(all=True):
                if c.name.startswith(PREFIX):
                    backend.remove(c.name, force=True)
    for engine, image in images:
        with contextlib.suppress(CmanError):
            cman.backend(engine).image_remove(image, force=True)


def _config(engine: str, image: str) -> dict[str, object]:
    proc = cli("image", "inspect", "--json", image, backend=engine)
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)["extra"].get("config")
    assert isinstance(config, dict), (engine, proc.stdout)
    return config


def test_copy_keeps_the_config(made: list[tuple[str, str]]) -> None:
    """docker -> lxd,lxc, then lxd -> docker: the same default run and the same config everywhere."""
    _require(*ENGINES)
    _in_registry("cman/configured", "latest")
    if cli("pull", CONFIGURED, backend="docker", timeout=300).returncode != 0:
        unavailable(f"docker cannot pull {CONFIGURED}")
    source = _config("docker", CONFIGURED)
    there, back = f"{PREFIX}-cfg:1", f"{PREFIX}-cfgback:1"
    made += [("lxd", there), ("lxc", there), ("docker", back)]
    proc = cli("image", "copy", CONFIGURED, "--from", "docker", "--to", "lxd,lxc", "--name", there, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "not kept" not in proc.stderr, proc.stderr
    proc = cli("image", "copy", there, "--from", "lxd", "--to", "docker", "--name", back, timeout=600)
    assert proc.returncode == 0, proc.stderr
    outputs = {}
    for engine, image in (("lxd", there), ("lxc", there), ("docker", back)):
        assert _config(engine, image) == source, engine
        run = cli("run", "--rm", image, backend=engine, timeout=300)  # no command: Entrypoint + Cmd
        assert run.returncode == 0, (engine, run.stderr)
        outputs[engine] = run.stdout.splitlines()
    assert all(lines == EXPECTED for lines in outputs.values()), outputs


def test_copy_json_reports_nothing_lost(made: list[tuple[str, str]]) -> None:
    _require("docker", "lxc")
    _in_registry("cman/configured", "latest")
    if cli("pull", CONFIGURED, backend="docker", timeout=300).returncode != 0:
        unavailable(f"docker cannot pull {CONFIGURED}")
    name = f"{PREFIX}-cfgjson:1"
    made.append(("lxc", name))
    proc = cli("image", "copy", CONFIGURED, "--from", "docker", "--to", "lxc", "--name", name, "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["not_kept"] == [] and report["results"][0]["image"]["extra"]["config"]["user"] == "cmanuser"


@pytest.mark.parametrize("engine", ENGINES)
def test_exec_follows_workdir_and_user(engine: str, made: list[tuple[str, str]]) -> None:
    """An image imported with a config (the contract's ``config=``): ``exec`` runs in its
    WorkingDir as its User on every engine (Docker natively; LXD and LXC as cman wraps it)."""
    _require(engine)
    if not ROOTFS.is_file():
        unavailable(f"test rootfs {ROOTFS} is missing: run scripts/setup-engines.sh")
    image, box = f"{PREFIX}-exec:1", f"{PREFIX}-exec"
    made.append((engine, image))
    config = ImageConfig(cmd=("sleep", "600"), workdir="/etc", user="nobody")  # nobody is 65534 in the rootfs
    got = cman.backend(engine).image_import(ROOTFS, image, config=config)
    assert got.extra["config"]["workdir"] == "/etc" and got.extra["config"]["user"] == "nobody"
    assert cli("run", "-d", "--name", box, image, backend=engine).returncode == 0
    pwd = cli("exec", box, "pwd", backend=engine)
    uid = cli("exec", box, "id", "-u", backend=engine)
    assert (pwd.returncode, pwd.stdout.strip()) == (0, "/etc"), pwd.stderr
    assert (uid.returncode, uid.stdout.strip()) == (0, "65534"), uid.stderr
    code = cli("exec", box, "sh", "-c", "exit 7", backend=engine)
    assert code.returncode == 7, "exit codes pass through the wrapper"


def test_import_with_a_bad_config_is_refused(made: list[tuple[str, str]]) -> None:
    """Bad values are exit 2 before the daemon is called: nothing is made."""
    _require("docker")
    name = f"{PREFIX}-badcfg:1"
    made.append(("docker", name))
    backend = cman.backend("docker")
    for config in (ImageConfig(env=("A=one\nCMD [\"x\"]",)), ImageConfig(workdir="/a\nUSER root"),
                   ImageConfig(user="-1"), ImageConfig(env=("NO_EQUALS",)), ImageConfig(env=("A B=1",))):
        with pytest.raises(InvalidValue):
            backend.image_import(ROOTFS, name, config=config)
    with pytest.raises(CmanError):
        backend.image_inspect(name)


def test_import_user_missing_from_the_rootfs() -> None:
    """LXD and LXC resolve User through the tarball: a name it lacks is exit 2, nothing made."""
    _require("lxc")
    with pytest.raises(InvalidValue, match="no user"):
        cman.backend("lxc").image_import(ROOTFS, f"{PREFIX}-nouser:1", config=ImageConfig(user="nosuchuser"))


def test_import_cli_unchanged() -> None:
    """``image import TARBALL NAME`` takes no config: a bad name is still exit 2, one line."""
    assert_clean_error(cli("image", "import", str(ROOTFS), "Bad Name", backend="docker"), 2)


# -- the OCI layout: image prune drops dead tags and frees their blobs ------------------------------


def _skopeo_into(layout: Path, source: str, key: str) -> None:
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--remove-signatures", "--src-tls-verify=false",
                    f"docker://{source}", f"oci:{layout}:{key}"], check=True, capture_output=True, timeout=300)


@pytest.fixture
def private_lxc(tmp_path: Path) -> dict[str, str]:
    """A private OCI layout and LXC store, filled with real skopeo copies."""
    _require("lxc")
    _in_registry("cman/configured", "extra")
    for tool in ("skopeo", "umoci"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            unavailable(f"{tool} is not installed: run scripts/setup-engines.sh")
    (tmp_path / "lxc").mkdir()
    return {"CMAN_OCI_DIR": str(tmp_path / "oci"), "CMAN_LXC_PATH": str(tmp_path / "lxc"),
            "CMAN_LXC_IMAGES": str(tmp_path / "images")}


def _blob_bytes(layout: Path) -> int:
    return sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())


def test_prune_drops_dead_tags_and_frees_blobs(private_lxc: dict[str, str]) -> None:
    """Two real pulls into a private LXC store; the image of one is removed: prune drops its
    tag and the blobs only it used, keeps the other, and keeps a tag pulled by a store it
    did not ask (another LXC store) and one of no known store."""
    layout = Path(private_lxc["CMAN_OCI_DIR"])
    for ref in (CONFIGURED, SIBLING):
        got = cli("pull", ref, backend="lxc", env=private_lxc, timeout=600)
        assert got.returncode == 0, got.stderr
    assert cli("image", "rm", SIBLING, backend="lxc", env=private_lxc).returncode == 0
    kept, gone = oci_layout.tag_key(parse(CONFIGURED)), oci_layout.tag_key(parse(SIBLING))
    elsewhere, unknown = (oci_layout.tag_key(parse(f"{PREFIX}-{n}:1")) for n in ("elsewhere", "unknown"))
    _skopeo_into(layout, SIBLING, elsewhere)
    _skopeo_into(layout, SIBLING, unknown)
    users = json.loads((layout / oci_layout.USERS).read_text())
    assert set(users) == {kept, gone}, "each pull recorded its store"
    users[elsewhere] = ["lxc:/nonexistent/other-store"]
    (layout / oci_layout.USERS).write_text(json.dumps(users))
    everything = {kept, gone, elsewhere, unknown}
    assert set(oci_layout.tags(layout)) == everything
    full = _blob_bytes(layout)

    held = os.open(layout / oci_layout.PULLS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:  # a pull in progress (the shared lock a pull holds): nothing is touched
        fcntl.flock(held, fcntl.LOCK_SH)
        busy = cli("image", "prune", "--json", backend="lxc", env=private_lxc)
        assert busy.returncode == 0, busy.stderr
        assert not [r for r in json.loads(busy.stdout)["removed"] if r.startswith("oci-layout")]
        assert set(oci_layout.tags(layout)) == everything and _blob_bytes(layout) == full
    finally:
        os.close(held)

    proc = cli("image", "prune", "--json", backend="lxc", env=private_lxc)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [r for r in result["removed"] if r.startswith("oci-layout")] == [f"oci-layout {gone}"]
    assert set(oci_layout.tags(layout)) == {kept, elsewhere, unknown}
    assert _blob_bytes(layout) == full, "the dropped tag's blobs are still reached by two tags"

    # Once no tag reaches the extra layer (those two tags removed by hand), prune frees it.
    subprocess.run(["umoci", "rm", "--image", f"{layout}:{elsewhere}"], check=True, timeout=60)
    subprocess.run(["umoci", "rm", "--image", f"{layout}:{unknown}"], check=True, timeout=60)
    freed = cli("image", "prune", "--json", backend="lxc", env=private_lxc)
    assert freed.returncode == 0, freed.stderr
    gained = full - _blob_bytes(layout)
    assert gained > 0 and json.loads(freed.stdout)["reclaimed_bytes"] >= gained, "umoci gc freed the extra layer"
    assert set(oci_layout.tags(layout)) == {kept}
    unpacked = subprocess.run(["umoci", "unpack", "--image", f"{layout}:{kept}", str(layout.parent / "bundle")],
                              capture_output=True, text=True, timeout=120)
    assert unpacked.returncode == 0, unpacked.stderr  # the kept image is whole
    run = cli("run", "--rm", "--privileged", CONFIGURED, backend="lxc", env=private_lxc, timeout=300)  # 0700 /tmp
    assert run.returncode == 0 and run.stdout.splitlines() == EXPECTED, run.stderr

    text = cli("image", "prune", backend="lxc", env=private_lxc)
    assert text.returncode == 0 and "oci-layout" not in text.stdout and "reclaimed: 0B" in text.stdout
