"""``exec`` on LXD: pylxd makes the exec operation, :mod:`.ws` carries its streams.

With a pty (``-t``, LXD's ``interactive``) the remote terminal's size follows the
local one (``window-resize`` on the control websocket); stdin EOF is passed on;
Ctrl-C without a pty is forwarded as SIGINT. Exit codes pass through (127 command
not found, 126 not executable, 128+N killed by signal N).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ... import jobs
from ..._sys import tty as _tty
from ...errors import CmanError, Conflict, EngineError, EngineExecFailed, Interrupted
from ...models import State
from ...oci import imageconfig
from . import endpoint
from .connection import LxdConnection, OperationFailed, _boundary
from .convert import CFG_LABEL, _state_of

if TYPE_CHECKING:
    from ...models import StdIO
    from .ws import Dial


def exit_status(ref: str, operation: Mapping[str, Any], failure: str = "") -> int:
    """An exec operation's exit code. A negative one is LXD's own failure to start or follow the
    command, never its status: under load its forkexec helper can fail to report the command's
    PID ("Failed to retrieve PID of executing child process" in LXD's log) and the operation
    says -1. That is an error, so that no caller takes it for the command's answer (a ``cat``
    of a file that is there is not "missing")."""
    code = (operation.get("metadata") or {}).get("return")
    if code is None:
        raise EngineExecFailed(f"lxd: exec in {ref} finished but reported no exit code")
    if int(code) < 0:
        why = f": {failure}" if failure else ""
        raise EngineExecFailed(f"lxd: exec in {ref}: the daemon could not run or follow the command (code {code}{why})",
                               hint="try again; LXD's log says why")
    return int(code)


class LxdExec(LxdConnection):
    """Commands in a running container, with the caller's streams."""

    def _dial(self) -> tuple[Dial, str]:
        """How to open a socket to the daemon for a websocket, and the Host header to send."""
        from . import ws

        remote = self.remote
        if remote is None:
            return ws.unix_dialer(endpoint.lxd_socket()), "lxd"
        return ws.tls_dialer(remote.host, remote.port, cert=remote.cert, verify=remote.verify), remote.host

    def exec(
        self,
        ref: str,
        command: Sequence[str],
        io: StdIO,
        *,
        env: dict[str, str] | None = None,
    ) -> int:
        with _boundary(container=ref, action="exec"):
            raw = self._raw(ref)
            if _state_of(raw) != State.RUNNING:
                raise Conflict(f"container {ref} is not running", hint=f"start it first: cman start lxd:{ref}")
        label = (raw.get("config") or {}).get(CFG_LABEL + imageconfig.EXEC_LABEL)
        argv = imageconfig.exec_argv(label, command)  # the image's WorkingDir and User, as docker exec
        return self._exec(ref, argv, io, env=env, program=command[0] if command else None)

    def _exec(
        self,
        ref: str,
        command: Sequence[str],
        io: StdIO,
        *,
        env: dict[str, str] | None,
        program: str | None = None,
    ) -> int:
        """``program``: what the user asked to run, when ``command`` wraps it (for the 126/127 note)."""
        from . import ws

        environment = dict(env or {})
        body: dict[str, Any] = {
            "command": list(command),
            "environment": environment,
            "wait-for-websocket": True,
            "interactive": io.tty,
            "record-output": False,
        }
        if io.tty:
            environment.setdefault("TERM", os.environ.get("TERM") or "xterm")
            size = _tty.window_size(_tty.terminal_fd(io))
            rows, cols = size or (24, 80)
            body["width"], body["height"] = cols, rows
        with _boundary(container=ref, action="exec"):
            response = self.client.api.instances[ref].exec.post(json=body).json()
            operation = str(response["operation"])
            fds = dict(response["metadata"]["metadata"]["fds"])
            dial, host = self._dial()
            channels = ws.connect_channels(dial, host, urlparse(operation).path, fds, pty=io.tty)
        try:
            produced = ws.pump(channels, io, pty=io.tty)
        except ws.WebSocketError as err:  # a framing error or an oversized message from the daemon
            raise EngineError(f"lxd exec in {ref}: {err}") from err
        except Interrupted as err:
            with contextlib.suppress(OSError):
                ws.send_signal(channels.control, int(getattr(signal.Signals, err.signame, signal.SIGINT)))
            raise
        finally:
            channels.close()
        with _boundary(container=ref, action="exec"):
            try:
                code = exit_status(ref, self._wait_op(operation))
            except OperationFailed as err:
                # LXD marks every exec that returns 126/127 as failed ("Command not found"),
                # whether or not the command existed: the code is the truth, not the text.
                if (err.operation.get("metadata") or {}).get("return") is None:
                    raise
                code = exit_status(ref, err.operation, err.message)
        if code in (126, 127) and not produced and command:
            self._explain_launch_failure(ref, program or command[0], int(code), io)
        return code

    def _exec_quiet(self, ref: str, argv: Sequence[str]) -> tuple[int, str]:
        """Run ``argv`` without a terminal; its exit code and what it said on stderr."""
        import io as _io

        from ...models import StdIO

        out, err = _io.BytesIO(), _io.BytesIO()
        code = self._exec(ref, argv, StdIO(None, out, err), env=None)
        return code, err.getvalue().decode(errors="replace").strip()

    def _runnable(self, ref: str, program: str) -> int | None:
        """Can the container run ``program``? 0, 126 (not an executable file) or 127 (not
        found), as the shell that runs a job resolves it (builtins, the container's PATH);
        None when the check itself could not run."""
        import io as _io

        from ...models import StdIO

        out = _io.BytesIO()
        code = self._exec(ref, jobs.check_argv(program), StdIO(None, out, _io.BytesIO()), env=None)
        return jobs.check_verdict(code, out.getvalue())

    def _explain_launch_failure(self, ref: str, program: str, code: int, io: StdIO) -> None:
        """A silent 127/126 may be a command that exited so, or one that could not start:
        ask the container which, and say so on stderr (as ``docker run`` does)."""
        with contextlib.suppress(CmanError, OSError):
            if self._runnable(ref, program) == code:
                why = "command not found" if code == 127 else "permission denied (not an executable file)"
                io.stderr.write(f"cman: {program}: {why} in lxd:{ref}\n".encode())
                io.stderr.flush()
