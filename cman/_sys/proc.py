"""The one subprocess gateway: argv lists only, a timeout on every call; and process identity.

Errors keep argv, exit code and stderr. Callers classify failures by exit code
and by querying state afterwards (``lxc-info``), not by parsing English stderr;
the few stderr patterns that are unavoidable live in one table in the caller.

A process is named by ``PID:STARTTIME`` (:func:`mark`), never by a PID alone: PIDs are
reused, and a new process under an old PID would make a dead cman's leftovers look busy.
:func:`process_alive` is the one check (``cman system prune``, the ``cman.run`` label).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import EngineError, EngineTimeout, EngineUnavailable

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class ProcError(EngineError):
    """A command exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        last = (stderr.strip().splitlines() or [""])[-1]
        super().__init__(f"`{' '.join(argv)}` exited {returncode}" + (f": {last}" if last else ""))
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input: str | None = None,  # noqa: A002 - subprocess's name
    env: Mapping[str, str] | None = None,
    backend: str = "lxc",
    fix: str | None = None,
) -> Completed:
    """Run ``argv`` (never through a shell) and capture its output.

    ``fix`` is what to tell the user when the program is missing.
    """
    argv = _checked(argv)
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=dict(env) if env is not None else None,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as err:
        raise _missing(argv, backend, fix) from err
    except subprocess.TimeoutExpired as err:
        raise EngineTimeout(f"`{' '.join(argv)}` did not finish within {timeout:g} s") from err
    result = Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise ProcError(argv, proc.returncode, proc.stdout, proc.stderr)
    return result


def spawn(argv: Sequence[str], *, backend: str = "lxc", fix: str | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """The streaming counterpart of :func:`run`, for processes whose streams are pumped
    or inherited: argv list, never a shell; a missing program is EngineUnavailable."""
    args = _checked(argv)
    try:
        return subprocess.Popen(args, **popen)
    except FileNotFoundError as err:
        raise _missing(args, backend, fix) from err


def _checked(argv: Sequence[str]) -> list[str]:
    args = [str(a) for a in argv]
    if not args or any("\0" in a for a in args):
        raise ValueError("argv must be non-empty and contain no NUL bytes")
    return args


_PACKAGES = {"setsid": "util-linux", "ip": "iproute2", "bridge": "iproute2", "iptables": "iptables", "tar": "tar"}


def _missing(argv: Sequence[str], backend: str, fix: str | None) -> EngineUnavailable:
    program = argv[0]
    package = _PACKAGES.get(os.path.basename(program), "lxc" if program.startswith("lxc-") else program)
    return EngineUnavailable(backend, f"{program} is not installed", fix or f"install it: apt-get install {package}")


# -- process identity ---------------------------------------------------------------------------

_MARK = re.compile(r"([1-9][0-9]{0,9}):([0-9]{1,20})")


def start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks since boot); None when there
    is no such process.

    The second field (the command name) is in parentheses and may itself hold spaces and
    ')', so fields are counted from the last ')'.
    """
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # fields[0] is field 3, so field 22 is fields[19]
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, starttime: int) -> bool:
    """Is process ``pid`` alive and the same one that started at ``starttime``?

    A zombie counts as alive until it is reaped (its leftovers wait for the next look).
    """
    return start_time(pid) == starttime


def mark(pid: int | None = None) -> str:
    """``PID:STARTTIME`` of this process (or of ``pid``): what ``models.RUN_LABEL`` holds."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{start_time(pid) or 0}"


def parse_mark(text: str) -> tuple[int, int] | None:
    """(PID, STARTTIME) of a ``PID:STARTTIME`` mark; None when ``text`` is not one."""
    m = _MARK.fullmatch(text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def mark_alive(text: str) -> bool | None:
    """Does the process a mark names still run? None when ``text`` is not a mark (unknown:
    not cman's to judge)."""
    parsed = parse_mark(text)
    return None if parsed is None else process_alive(*parsed)
