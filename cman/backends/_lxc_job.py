"""Supervisor of a detached container command (``cman run -d IMAGE CMD``, ``cman start``).

    python -m cman.backends._lxc_job LXCPATH NAME RUN BOOT_PID REPLY_FD

Started by :meth:`LxcBackend.start` in its own session, with no terminal. It runs
``lxc-attach --clear-env ... -- CMD`` (argv list, no shell), so CMD runs inside the
container's namespaces and cgroups; copies CMD's stdout and stderr, in order, into the
container's ``cman.log``; then records CMD's exit code and stops the container (see
:func:`cman.backends.lxc.finish_job`). It writes one line to REPLY_FD once CMD is
launched ("ok") or could not be ("error: ..."), which is what ``start`` waits for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from ..errors import CmanError
from ..models import StdIO
from . import _lxc_fs
from ._lxc_attach import attach_argv, attach_env, run_attached
from .lxc import _RUNNING, Paths, finish_job, info


def _reply(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, message.encode("utf-8", "replace")[:200] + b"\n")
    with contextlib.suppress(OSError):
        os.close(fd)


def main(argv: list[str]) -> int:
    lxcpath, name, run_s, boot_s, fd_s = argv
    run, boot, fd = int(run_s), int(boot_s) or None, int(fd_s)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    paths = Paths(lxcpath, name)
    try:
        meta = _lxc_fs.read_json(paths.meta) or {}
        command = [str(c) for c in meta.get("command") or []]
        st, pid = info(lxcpath, name)
        if st not in _RUNNING or pid != boot:
            _reply(fd, f"error: the container is {st or 'gone'} (restarted or stopped meanwhile)")
            return 1
        cmd_argv = attach_argv(lxcpath, name, command, attach_env(meta.get("env") or {}, None, tty=False))
        with _lxc_fs.locked(paths.state_lock, timeout=30):
            state = _lxc_fs.read_json(paths.state) or {}
            if state.get("run") != run:
                _reply(fd, "error: the container was restarted meanwhile")
                return 1
            state["job_pid"] = os.getpid()
            _lxc_fs.write_json(paths.state, state)
    except (CmanError, OSError, ValueError) as err:
        _reply(fd, f"error: {err}")
        return 1
    _reply(fd, "ok")
    code = 128 + signal.SIGKILL
    try:
        with open(os.devnull, "wb") as null, open(paths.output, "ab") as log:
            code = run_attached(cmd_argv, StdIO(None, null, null), tty=False, log=log)
    finally:
        finish_job(lxcpath, name, run, boot, code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
