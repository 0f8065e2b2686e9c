"""The job runner's logic over an in-memory engine (the primitives are tested on real engines)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import ClassVar

import pytest

from cman import jobs
from cman.errors import EngineError, Interrupted
from cman.models import State, StdIO


class FakeHost:
    """An engine reduced to the primitives of jobs.JobHost: files in a dict, a state, a log of calls."""

    name: ClassVar[str] = "fake"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.states: list[State | None] = [State.RUNNING]
        self.calls: list[tuple[str, ...]] = []
        self.exec_code = 0
        self.exec_output = (b"", b"")
        self.exec_raises: BaseException | None = None

    def job_state(self, ref: str) -> State | None:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def read_file(self, ref: str, path: str) -> bytes | None:
        return self.files.get(path)

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        self.calls.append(("write", path))
        self.files[path] = data

    def exec_attached(self, ref: str, command: Sequence[str], io: StdIO) -> int:
        self.calls.append(("exec", *command))
        if self.exec_raises is not None:
            raise self.exec_raises
        io.stdout.write(self.exec_output[0])
        io.stderr.write(self.exec_output[1])
        return self.exec_code

    def exec_detached(self, ref: str, argv: Sequence[str]) -> None:
        self.calls.append(("detached", *argv))

    def halt_signal(self, ref: str) -> int:
        return 10

    def kill(self, ref: str) -> None:
        self.calls.append(("kill",))


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs.time, "sleep", lambda _s: None)


def test_wrapper_is_a_constant_and_takes_the_command_as_arguments() -> None:
    assert '"$@"' in jobs.WRAPPER
    argv = jobs.wrapper_argv(30, ["sh", "-c", "echo $HOME; rm -rf /"])
    assert argv[:5] == ["/bin/sh", "-c", jobs.WRAPPER, jobs.JOB_ARGV0, "30"]
    assert argv[5:] == ["sh", "-c", "echo $HOME; rm -rf /"], "user input stays an argument, never shell text"
    for tool in ("mkdir", "mv ", "rm ", "cat "):
        assert tool not in jobs.WRAPPER, f"the wrapper needs only sh builtins, not {tool.strip()}"


def test_launch_empties_the_code_then_starts_the_wrapper() -> None:
    host = FakeHost()
    host.files[jobs.JOB_RC] = b"3\n"
    jobs.launch(host, "c", ["sleep", "1"])
    assert host.files[jobs.JOB_RC] == b""
    assert host.calls[-1] == ("detached", *jobs.wrapper_argv(10, ["sleep", "1"]))


def test_foreground_runs_under_the_wrapper_kills_then_records_output_and_code() -> None:
    host = FakeHost()
    host.files[jobs.JOB_OUT] = b"earlier\n"
    host.files[jobs.JOB_RC] = b"1\n"
    host.exec_code, host.exec_output = 4, (b"out\n", b"err\n")
    out, err = io.BytesIO(), io.BytesIO()
    assert jobs.run_foreground(host, "c", ["x", "a b"], StdIO(None, out, err)) == 4
    assert out.getvalue() == b"out\n" and err.getvalue() == b"err\n"
    assert host.calls[0] == ("write", jobs.JOB_RC), "the last run's code is emptied before the job starts"
    assert host.calls[1] == ("exec", *jobs.foreground_argv(10, ["x", "a b"]))
    assert host.calls[2] == ("kill",), "killed before recording: the wrapper has already asked init to halt"
    assert host.files[jobs.JOB_OUT] == b"earlier\nout\n", "output accumulates over runs"
    assert host.files[jobs.JOB_ERR] == b"err\n"
    assert host.files[jobs.JOB_RC] == b"4\n"


def test_foreground_interrupted_kills_and_reraises() -> None:
    host = FakeHost()
    host.exec_raises = Interrupted("SIGTERM")
    with pytest.raises(Interrupted):
        jobs.run_foreground(host, "c", ["x"], StdIO(None, io.BytesIO(), io.BytesIO()))
    assert host.calls[-1] == ("kill",)
    assert host.files[jobs.JOB_RC] == b"", "no code was recorded"


def test_exit_code_of_a_job_killed_before_recording() -> None:
    host = FakeHost()
    assert jobs.exit_code(host, "c") == jobs.KILLED_EXIT
    host.files[jobs.JOB_RC] = b""
    assert jobs.exit_code(host, "c") == jobs.KILLED_EXIT
    host.files[jobs.JOB_RC] = b"0\n"
    assert jobs.exit_code(host, "c") == 0


def test_wait_reads_the_code_once_stopped() -> None:
    host = FakeHost()
    host.states = [State.RUNNING, State.RUNNING, State.STOPPED]
    host.files[jobs.JOB_RC] = b"9\n"
    assert jobs.wait(host, "c") == 9


def test_wait_on_an_ephemeral_container_keeps_the_code_seen_while_running() -> None:
    host = FakeHost()
    host.states = [State.RUNNING, None]
    host.files[jobs.JOB_RC] = b"2\n"
    assert jobs.wait(host, "c") == 2
    gone = FakeHost()
    gone.states = [None]
    with pytest.raises(EngineError, match="removed before its exit code"):
        jobs.wait(gone, "c")


def test_logs_follow_until_stopped_and_restart_from_a_rewritten_file() -> None:
    host = FakeHost()
    host.files[jobs.JOB_OUT] = b"a\n"
    host.states = [State.RUNNING, State.STOPPED]
    chunks = list(jobs.logs(host, "c", follow=True))
    assert [(c.stream, c.data) for c in chunks] == [("stdout", b"a\n")]
    host.files[jobs.JOB_ERR] = b"e\n"
    assert [(c.stream, c.data) for c in jobs.logs(host, "c")] == [("stdout", b"a\n"), ("stderr", b"e\n")]


@pytest.mark.parametrize(("text", "number"), [
    (None, 30), ("SIGPWR", 30), ("PWR", 30), ("SIGUSR1", 10), ("12", 12), ("SIGRTMIN+3", 37), ("bogus", 30),
])
def test_parse_signal(text: str | None, number: int) -> None:
    assert jobs.parse_signal(text) == number
