"""The foreground job wrapper (cman.jobs.FOREGROUND_WRAPPER) run by real POSIX shells, no engine.

The wrapper is the same text the engines run, with two edits so that it can run on this
host: its job folder is a temporary one, and "ask init to halt" writes the signal's
number to a file instead of signalling PID 1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cman import jobs

SHELLS = [sh for sh in (["dash"], ["busybox", "sh"]) if shutil.which(sh[0])] or [["sh"]]
"""The shells of Debian and busybox images; at least the host's own."""
HALT = 30


def _script(folder: Path) -> str:
    text = jobs.FOREGROUND_WRAPPER
    assert text.count(f"d={jobs.JOB_DIR};") == 1 and text.count('kill -"$h" 1)') == 1
    return text.replace(f"d={jobs.JOB_DIR};", f"d={folder};").replace('kill -"$h" 1)', 'echo "$h" >"$d/halted")')


def _until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"


@pytest.fixture(params=SHELLS, ids=lambda sh: sh[0])
def wrapper(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., subprocess.Popen[bytes]]:
    shell: list[str] = request.param

    def start(*command: str, **popen: object) -> subprocess.Popen[bytes]:
        argv = [*shell, "-c", _script(tmp_path), jobs.JOB_ARGV0, str(HALT), *command]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)  # type: ignore[call-overload]

    return start


def _files(tmp_path: Path) -> tuple[str, str]:
    rc = (tmp_path / "job.rc").read_text() if (tmp_path / "job.rc").exists() else ""
    halted = (tmp_path / "halted").read_text() if (tmp_path / "halted").exists() else ""
    return rc.strip(), halted.strip()


def test_it_is_a_constant_of_sh_builtins_with_the_command_as_arguments() -> None:
    argv = jobs.foreground_argv(30, ["sh", "-c", "echo $HOME; rm -rf /"])
    assert argv[:5] == ["/bin/sh", "-c", jobs.FOREGROUND_WRAPPER, jobs.JOB_ARGV0, "30"]
    assert argv[5:] == ["sh", "-c", "echo $HOME; rm -rf /"], "user input stays an argument, never shell text"
    for tool in ("mkdir", "mv ", "rm ", "cat ", "sleep", "poweroff", "tee"):
        assert tool not in jobs.FOREGROUND_WRAPPER, f"the wrapper needs only sh builtins, not {tool.strip()}"
    with pytest.raises(ValueError):
        jobs.foreground_argv(30, [])


@pytest.mark.parametrize(("command", "code"), [
    (("sh", "-c", "echo out; echo err >&2; exit 7"), 7),
    (("/no/such/command",), 127),
    (("NOEXEC",), 126),
    (("sh", "-c", "kill -TERM $$"), 143),
    (("exit", "4"), 4),  # a shell builtin as the command ends the command, not the wrapper
    (("exec", "sh", "-c", "exit 6"), 6),
])
def test_exit_code_is_exact_and_recorded_then_init_is_asked_to_halt(
    wrapper: Callable[..., subprocess.Popen[bytes]], tmp_path: Path, command: tuple[str, ...], code: int,
) -> None:
    plain = tmp_path / "plain-file"
    plain.write_text("not a program\n")
    plain.chmod(0o644)
    proc = wrapper(*[str(plain) if arg == "NOEXEC" else arg for arg in command])
    _until(lambda: _zombie(proc.pid))
    assert _files(tmp_path) == (str(code), ""), "no halt before the engine has collected the wrapper's code"
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == code, err
    _until(lambda: _files(tmp_path)[1] != "")
    assert _files(tmp_path) == (str(code), str(HALT))
    if code == 7:
        assert (out, err) == (b"out\n", b"err\n"), "the job's streams are the real ones, not the wrapper's pipe"


def test_stdin_reaches_the_command(wrapper: Callable[..., subprocess.Popen[bytes]], tmp_path: Path) -> None:
    proc = wrapper("cat", stdin=subprocess.PIPE)
    out, _ = proc.communicate(b"through stdin\n", timeout=10)
    assert (proc.returncode, out) == (0, b"through stdin\n")


def test_a_killed_wrapper_still_records_the_code_and_halts(
    wrapper: Callable[..., subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    """What happens when cman is SIGKILLed: LXD SIGKILLs the process it exec'd, the wrapper."""
    proc = wrapper("sh", "-c", "sleep 1; exit 3")
    time.sleep(0.3)
    proc.kill()
    proc.wait(timeout=10)
    assert _files(tmp_path) == ("", "")
    _until(lambda: _files(tmp_path) == ("3", str(HALT)))


def test_a_signal_to_the_wrapper_alone_does_not_cut_the_record_short(
    wrapper: Callable[..., subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    proc = wrapper("sh", "-c", "sleep 0.5; exit 5")
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=10) == 5
    _until(lambda: _files(tmp_path) == ("5", str(HALT)))


def test_ctrl_c_to_the_foreground_group_ends_the_command_not_the_record(
    wrapper: Callable[..., subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    """A terminal's Ctrl-C reaches the whole foreground process group: the command (which
    starts with SIGINT's default action, not ignored) dies of it; the wrapper records 130."""
    proc = wrapper("sleep", "30", start_new_session=True)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    _until(lambda: _files(tmp_path) == ("130", str(HALT)))
