"""The backend conformance suite: the same tests, unchanged, on every real engine.

Everything goes through the real CLI (a subprocess) against the real engine.
Where engines legitimately differ, the difference is a declared capability or a
field of the ``Engine`` fixture (tests/conftest.py), never an if on the name.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pexpect
import pytest

from cman.backends.base import Feature
from cman.errors import CmanError

from ..conftest import ROOTFS, Engine, assert_clean_error, cli, variant_rootfs

pytestmark = pytest.mark.engine


def _wait_state(eng: Engine, name: str, want: str | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if eng.state(name) == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} never reached state {want!r} (now {eng.state(name)!r})")


def _run_detached(eng: Engine, tag: str, *cmd: str, extra: tuple[str, ...] = ()) -> str:
    name = eng.name_for(tag)
    proc = eng.cli("run", "-d", "--name", name, *extra, eng.image, *cmd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "run -d prints the container ID"
    return name


# -- images -------------------------------------------------------------------------


def test_pull(eng: Engine) -> None:
    """A real pull with progress where this machine has a source (the local registry, LXC's
    busybox template); everywhere, a source that cannot be reached is one clear line, fast."""
    eng.backend.require(Feature.PULL)
    if eng.pull_ref is not None:
        with contextlib.suppress(CmanError):  # absent already
            eng.backend.image_remove(eng.pull_ref, force=True)
        proc = eng.cli("pull", eng.pull_ref)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.strip(), "progress lines on stderr when not a terminal"
        assert eng.backend.image_inspect(eng.pull_ref).id
    assert eng.unreachable_pull_ref
    started = time.monotonic()
    proc = eng.cli("pull", eng.unreachable_pull_ref)
    # 5: the source cannot be reached; raw LXC says "not found" (3) without trying,
    # because its download template has no server configured at all.
    assert proc.returncode in (3, 5), (proc.returncode, proc.stderr)
    assert_clean_error(proc, proc.returncode)
    assert time.monotonic() - started < 60


def test_image_list_inspect_history(eng: Engine) -> None:
    listed = json.loads(eng.cli("images", "--json").stdout)
    assert any(eng.image in " ".join(img["tags"]) for img in listed), listed
    for img in listed:
        assert {"backend", "id", "tags", "size", "created"} <= img.keys()
    info = json.loads(eng.cli("image", "inspect", eng.image, "--json").stdout)
    assert info["backend"] == eng.name and info["id"]
    hist = eng.cli("image", "history", eng.image, "--json")
    assert hist.returncode == 0, hist.stderr
    assert isinstance(json.loads(hist.stdout), list)


def test_image_import_rm_refused_while_used_then_forced(eng: Engine) -> None:
    image = eng.name_for("img")
    proc = eng.cli("image", "import", str(ROOTFS), image)
    assert proc.returncode == 0, proc.stderr
    try:
        user = _run_detached(eng, "user", "sleep", "300", extra=())
        # the container above uses eng.image; make one that uses the new image
        name = eng.name_for("imguser")
        assert eng.cli("create", "--name", name, image, "sleep", "1").returncode == 0
        refused = eng.cli("image", "rm", image)
        assert_clean_error(refused, 4, "in use")
        assert eng.cli("rm", "-f", name).returncode == 0
        assert eng.cli("rm", "-f", user).returncode == 0
        assert eng.cli("image", "rm", image).returncode == 0
        assert_clean_error(eng.cli("image", "inspect", image), 3, "not found")
    finally:
        eng.cli("image", "rm", "--force", image)


def _import(eng: Engine, tarball: Path, name: str) -> str:
    proc = eng.cli("image", "import", str(tarball), name, "--json")
    assert proc.returncode == 0, proc.stderr
    image_id = str(json.loads(proc.stdout)["id"])
    assert image_id
    return image_id


def _same_id(a: str, b: str) -> bool:
    """IDs as engines print them: with or without ``sha256:``, full or a unique prefix."""
    a, b = a.removeprefix("sha256:"), b.removeprefix("sha256:")
    return len(min(a, b, key=len)) >= 12 and (a.startswith(b) or b.startswith(a))


def test_image_prune_removes_unnamed_unused_images_only(eng: Engine, tmp_path: Path) -> None:
    """An import under a taken name leaves the old image without a name; prune removes it once
    no container uses it, and never a named image."""
    name = eng.name_for("prune")
    old = _import(eng, ROOTFS, name)
    user = eng.name_for("pruneuser")
    assert eng.cli("create", "--name", user, name, "true").returncode == 0
    try:
        new = _import(eng, variant_rootfs(tmp_path / "variant.tar.gz", name), name)
        assert not _same_id(old, new), "another tarball is another image"
        assert _same_id(json.loads(eng.cli("image", "inspect", name, "--json").stdout)["id"], new)
        assert eng.cli("image", "inspect", old).returncode == 0, "the old image stays, unnamed"

        kept = eng.cli("image", "prune", "--json")
        assert kept.returncode == 0, kept.stderr
        assert not any(_same_id(old, r) for r in json.loads(kept.stdout)["removed"]), "a container uses it"
        assert eng.cli("image", "inspect", old).returncode == 0

        assert eng.cli("rm", "-f", user).returncode == 0
        pruned = eng.cli("image", "prune", "--json")
        assert pruned.returncode == 0, pruned.stderr
        removed = json.loads(pruned.stdout)["removed"]
        assert any(_same_id(old, r) for r in removed), (old, removed)
        assert_clean_error(eng.cli("image", "inspect", old), 3, "not found")
        for named in (name, eng.image):
            assert eng.cli("image", "inspect", named).returncode == 0, f"prune removed the named image {named}"
        again = eng.cli("image", "prune", "--json")
        assert not any(_same_id(old, r) for r in json.loads(again.stdout)["removed"])
    finally:
        eng.cli("rm", "-f", user)
        eng.cli("image", "rm", "--force", name)
        eng.cli("image", "rm", "--force", old)


def test_missing_image_errors(eng: Engine) -> None:
    assert_clean_error(eng.cli("image", "inspect", eng.missing_image), 3, "not found")
    run = eng.cli("run", "--rm", eng.missing_image, "true")
    assert_clean_error(run, 125)


# -- run ------------------------------------------------------------------------------


def test_run_passes_exit_code_and_streams(eng: Engine) -> None:
    proc = eng.cli("run", "--rm", eng.image, "sh", "-c", "echo to-out; echo to-err >&2; exit 5")
    assert proc.returncode == 5, proc.stderr
    assert "to-out" in proc.stdout
    assert "to-err" in proc.stderr
    assert "to-err" not in proc.stdout


def test_run_env_and_stdin(eng: Engine) -> None:
    proc = eng.cli("run", "--rm", "-e", "GREETING=hello there", eng.image, "sh", "-c", 'echo "$GREETING"')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello there"
    piped = eng.cli("run", "--rm", "-i", eng.image, "cat", input="through stdin\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "through stdin\n"


def test_run_rm_removes_on_success_and_failure(eng: Engine) -> None:
    ok, bad = eng.name_for("rmok"), eng.name_for("rmbad")
    assert eng.cli("run", "--rm", "--name", ok, eng.image, "true").returncode == 0
    assert eng.cli("run", "--rm", "--name", bad, eng.image, "sh", "-c", "exit 3").returncode == 3
    assert eng.state(ok) is None
    assert eng.state(bad) is None


def test_run_without_rm_keeps_stopped_container(eng: Engine) -> None:
    name = eng.name_for("keep")
    assert eng.cli("run", "--name", name, eng.image, "sh", "-c", "exit 4").returncode == 4
    assert eng.state(name) is not None


def test_run_missing_command_leaves_nothing(eng: Engine) -> None:
    name = eng.name_for("nocmd")
    proc = eng.cli("run", "--name", name, eng.image, "/no/such/command")
    assert proc.returncode == 127, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    # On a system container the container boots and its job is not found: the same failed
    # start as Docker's, and the same guarantee (README: nothing left behind).
    assert eng.state(name) is None, "a failed start leaves no half-made container"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_rm_holds_when_cman_is_interrupted(eng: Engine, sig: signal.Signals) -> None:
    name = eng.name_for("intr")
    env = {**os.environ}
    env.pop("CMAN_BACKEND", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cman", "--backend", eng.name, "run", "--rm", "--name", name, eng.image, "sleep", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
    )
    try:
        _wait_state(eng, name, "running")
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert eng.state(name) is None


def test_run_it_has_a_real_pty(eng: Engine) -> None:
    eng.backend.require(Feature.TTY)
    name = eng.name_for("tty")
    child = pexpect.spawn(
        sys.executable, ["-m", "cman", "--backend", eng.name, "run", "-it", "--rm", "--name", name, eng.image, "sh"],
        dimensions=(33, 101), timeout=60, encoding="utf-8",
    )
    # Patterns are built by the shell ($((...))) so the terminal's echo of what we
    # type cannot match them; we wait for the prompt because busybox's line editor
    # drops type-ahead while it probes the terminal.
    try:
        child.expect("# ")
        child.sendline("[ -t 0 ] && echo TTY-$((1+1))-YES")
        child.expect("TTY-2-YES")
        child.sendline("echo SIZE-$(stty size | tr ' ' x)")
        child.expect("SIZE-33x101")
        child.sendline("sleep 30")
        time.sleep(1)
        child.sendcontrol("c")  # Ctrl-C interrupts the foreground job inside, not cman
        child.sendline("echo AFTER-$((2+2))")
        child.expect("AFTER-4", timeout=10)
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3
    _wait_state(eng, name, None)


def test_run_it_ctrl_d_ends_the_shell(eng: Engine) -> None:
    child = pexpect.spawn(
        sys.executable, ["-m", "cman", "--backend", eng.name, "run", "-it", "--rm", eng.image, "sh"],
        timeout=60, encoding="utf-8",
    )
    try:
        child.expect("# ")
        child.sendline("echo READY-$((3+3))")
        child.expect("READY-6")
        child.expect("# ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


# -- ps, lifecycle, exec, logs ------------------------------------------------------------


def test_ps_json_fields_and_states(eng: Engine) -> None:
    name = _run_detached(eng, "ps", "sleep", "300", extra=("--label", "team=blue"))
    items = {i["name"]: i for i in json.loads(eng.cli("ps", "-a", "--json").stdout)}
    item = items[name]
    assert {"name", "backend", "id", "image", "state", "managed"} <= item.keys()
    assert item["backend"] == eng.name
    assert item["state"] == "running"
    assert item["managed"] is True
    assert item["id"]
    assert item["image"] in (eng.image, f"{eng.image}:latest"), item
    running = {i["name"] for i in json.loads(eng.cli("ps", "--json").stdout)}
    assert name in running
    assert eng.cli("stop", "-t", "1", name).returncode == 0
    assert eng.state(name) == "stopped"
    assert name not in {i["name"] for i in json.loads(eng.cli("ps", "--json").stdout)}
    table = eng.cli("ps", "-a")
    assert name in table.stdout and "BACKEND" in table.stdout


def test_labels_and_inspect(eng: Engine) -> None:
    name = _run_detached(eng, "lbl", "sleep", "300", extra=("--label", "team=blue", "-l", "tier=web"))
    info = json.loads(eng.cli("inspect", name, "--json").stdout)[0]
    assert info["labels"]["team"] == "blue"
    assert info["labels"]["tier"] == "web"
    assert info["managed"] is True
    assert info["state"] == "running"
    assert isinstance(info["pid"], int) and info["pid"] > 0
    assert Path(f"/proc/{info['pid']}").exists()
    human = eng.cli("inspect", name)
    assert "team=blue" in human.stdout


def test_stop_start_restart(eng: Engine) -> None:
    name = _run_detached(eng, "life", "sleep", "300")
    assert eng.backend.init_pid(name)
    started = time.monotonic()
    assert eng.cli("stop", "-t", "2", name).returncode == 0
    assert time.monotonic() - started < 30
    assert eng.state(name) == "stopped"
    assert eng.backend.init_pid(name) is None
    assert eng.cli("start", name).returncode == 0
    assert eng.state(name) == "running"
    pid_before = eng.backend.init_pid(name)
    assert eng.cli("restart", "-t", "2", name).returncode == 0
    assert eng.state(name) == "running"
    assert eng.backend.init_pid(name) not in (None, pid_before)


def test_exec_exit_code_streams_and_stdin(eng: Engine) -> None:
    name = _run_detached(eng, "exec", "sleep", "300")
    proc = eng.cli("exec", name, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert proc.returncode == 7
    assert proc.stdout.strip() == "out"
    assert proc.stderr.strip() == "err"
    piped = eng.cli("exec", "-i", name, "cat", input="abc\n")
    assert piped.stdout == "abc\n"
    env = eng.cli("exec", "-e", "X=42", name, "sh", "-c", "echo $X")
    assert env.stdout.strip() == "42"
    missing = eng.cli("exec", name, "/no/such/binary")
    assert missing.returncode in (126, 127), (missing.returncode, missing.stderr)


def test_exec_it_pty(eng: Engine) -> None:
    name = _run_detached(eng, "exectty", "sleep", "300")
    child = pexpect.spawn(
        sys.executable, ["-m", "cman", "--backend", eng.name, "exec", "-it", name, "sh"],
        dimensions=(20, 70), timeout=60, encoding="utf-8",
    )
    try:
        child.expect("# ")
        child.sendline("[ -t 0 ] && echo EXEC-$((5+5)); echo SIZE-$(stty size | tr ' ' x)")
        child.expect("EXEC-10")
        child.expect("SIZE-20x70")
        child.sendline("exit 9")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 9


def _lines(stream: IO[bytes]) -> queue.Queue[str | None]:
    """The lines of ``stream`` as they come (None at the end), read by a thread."""
    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for raw in iter(stream.readline, b""):
            out.put(raw.decode(errors="replace").rstrip("\n"))
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _expect(lines: queue.Queue[str | None], want: str, seen: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while want not in seen:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"{want!r} did not appear within {timeout} s; seen {seen}") from None
        assert line is not None, f"logs -f ended before {want!r}; seen {seen}"
        seen.append(line)


def test_logs(eng: Engine) -> None:
    """``logs`` prints both streams; ``logs -f`` prints new output as it appears and ends on its
    own when the container stops."""
    name = _run_detached(eng, "logs", "sh", "-c",
                         "echo first-line; echo second-line >&2; "
                         "while [ ! -e /cman-go ]; do sleep 0.2; done; echo after-go-line; "
                         "while [ ! -e /cman-end ]; do sleep 0.2; done; echo last-line >&2")
    deadline = time.monotonic() + 20
    while True:
        proc = eng.cli("logs", name)
        assert proc.returncode == 0, proc.stderr
        if "first-line" in proc.stdout and "second-line" in proc.stderr:
            break
        assert time.monotonic() < deadline, (proc.stdout, proc.stderr)
        time.sleep(0.5)
    assert "after-go-line" not in proc.stdout
    follow = subprocess.Popen(
        [sys.executable, "-m", "cman", "--backend", eng.name, "logs", "-f", name],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    assert follow.stdout is not None
    lines, seen = _lines(follow.stdout), []
    try:
        _expect(lines, "first-line", seen)
        _expect(lines, "second-line", seen)
        assert eng.cli("exec", name, "touch", "/cman-go").returncode == 0
        _expect(lines, "after-go-line", seen)
        assert follow.poll() is None, "logs -f keeps following while the container runs"
        assert eng.cli("exec", name, "touch", "/cman-end").returncode == 0
        _expect(lines, "last-line", seen)
        assert follow.wait(timeout=60) == 0, seen
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert seen.count("after-go-line") == 1, seen
    assert eng.state(name) == "stopped"


def test_rm_refuses_running_then_force(eng: Engine) -> None:
    name = _run_detached(eng, "rm", "sleep", "300")
    assert_clean_error(eng.cli("rm", name), 4)
    assert eng.cli("rm", "-f", name).returncode == 0
    assert eng.state(name) is None


def test_limits_reach_the_cgroup(eng: Engine) -> None:
    name = _run_detached(eng, "lim", "sleep", "300", extra=("--cpus", "0.5", "--memory", "64m"))
    pid = eng.backend.init_pid(name)
    assert pid
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for ctl in controllers.split(","):
            paths[ctl] = path
    mem_root = Path("/sys/fs/cgroup/memory")
    cpu_root = Path("/sys/fs/cgroup/cpu")
    if "memory" in paths and mem_root.is_dir():
        limit = int((mem_root / paths["memory"].lstrip("/") / "memory.limit_in_bytes").read_text())
        assert limit == 64 * 1024 * 1024
    else:
        v2 = Path("/sys/fs/cgroup") / paths[""].lstrip("/")
        assert int((v2 / "memory.max").read_text()) == 64 * 1024 * 1024
    if "cpu" in paths and cpu_root.is_dir():
        base = cpu_root / paths["cpu"].lstrip("/")
        quota = int((base / "cpu.cfs_quota_us").read_text())
        period = int((base / "cpu.cfs_period_us").read_text())
        assert abs(quota / period - 0.5) < 0.01
    else:
        quota_s, period_s = (Path("/sys/fs/cgroup") / paths[""].lstrip("/") / "cpu.max").read_text().split()
        assert abs(int(quota_s) / int(period_s) - 0.5) < 0.01


# -- errors ---------------------------------------------------------------------------------


def test_error_engine_unreachable(eng: Engine) -> None:
    assert_clean_error(cli("ps", "-a", backend=eng.name, env=eng.unreachable_env), 5, eng.name)
    status = cli("engine", "status", "--json", backend=eng.name, env=eng.unreachable_env)
    assert status.returncode == 5
    entry = json.loads(status.stdout)[0]
    assert entry["reachable"] is False and entry["fix"], entry


def test_error_name_in_use(eng: Engine) -> None:
    name = eng.name_for("dup")
    assert eng.cli("create", "--name", name, eng.image, "true").returncode == 0
    assert_clean_error(eng.cli("create", "--name", name, eng.image, "true"), 4, "already in use")
    assert_clean_error(eng.cli("run", "--rm", "--name", name, eng.image, "true"), 125, "already in use")


def test_error_no_such_container(eng: Engine) -> None:
    ghost = f"{eng.name_for('ghost')}"
    assert_clean_error(eng.cli("stop", ghost), 3, "no such container")
    assert_clean_error(eng.cli("inspect", ghost), 3, "no such container")
    assert_clean_error(eng.cli("logs", ghost), 3, "no such container")
    assert_clean_error(eng.cli("exec", ghost, "true"), 125, "no such container")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("create", "--name", "-leading-dash"), "invalid container name"),
        (("create", "--name", "has space"), "invalid container name"),
        (("create", "--name", "x" * 300), "invalid container name"),
        (("create", "--memory", "12parsecs"), "--memory"),
        (("create", "--memory", "-5m"), "--memory"),
        (("create", "--cpus", "lots"), "--cpus"),
        (("create", "-e", "NOEQUALS"), "KEY=VALUE"),
        (("create", "--label", "=nokey"), "--label"),
    ],
)
def test_error_bad_input(eng: Engine, args: tuple[str, ...], needle: str) -> None:
    proc = eng.cli(*args, eng.image, "true")
    assert_clean_error(proc, 2, needle)
    run = eng.cli("run", "--rm", *args[1:], eng.image, "true")
    assert_clean_error(run, 125, needle)
