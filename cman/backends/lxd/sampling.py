"""What ``stats`` needs from LXD: init PIDs of instances on this host, found without the
daemon where liblxc's monitor processes show them, and CPU counters through the API for a
daemon on another host."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..._sys import unixhttp as _http
from ...models import Container, State
from .connection import LxdConnection, _boundary

if TYPE_CHECKING:
    from ...cgroups.counters import CpuCounters


class LxdSampling(LxdConnection):
    """Init PIDs and API CPU counters of instances."""

    def cpu_counters(self, ids: Sequence[str]) -> dict[str, CpuCounters | None]:
        """Each instance's ``state.cpu.usage`` (ns), from one ``recursion=2`` listing: LXD does
        not split user and system time, so those stay None."""
        from ...cgroups.counters import CpuCounters as Counters

        with _boundary(action="read the CPU use of instances"):
            raw = self.client.api.instances.get(params={"recursion": "2"}).json()["metadata"]
        usage: dict[str, Any] = {}
        for item in raw:
            state = item.get("state") or {}
            if str(state.get("status") or "") in ("Running", "Frozen"):
                usage[str(item.get("name"))] = (state.get("cpu") or {}).get("usage")
        out: dict[str, CpuCounters | None] = {}
        for cid in ids:
            value = usage.get(cid)
            out[cid] = Counters(value, None, None, "lxd-api", "", Path()) if isinstance(value, int) else None
        return out

    def init_pids(self, containers: Sequence[Container]) -> dict[str, int | None]:
        """Init PIDs from liblxc's monitor processes on this host (:func:`cman.cgroups.scan.lxc_monitors`,
        whose titles carry ``$LXD_DIR/containers``): a few file reads per instance instead of
        its state from the daemon, which is asked only for instances not found that way."""
        from ...cgroups import default_reader, scan

        path = self._socket
        monitors = scan.lxc_monitors(default_reader()) if path is not None else {}
        lxcpath = path.rpartition("/")[0] + "/containers" if path is not None else ""
        out: dict[str, int | None] = {}
        missing: list[Container] = []
        for c in containers:
            if c.pid is not None or c.state not in (State.RUNNING, State.PAUSED):
                out[c.id] = c.pid
                continue
            pid = monitors.get((lxcpath, c.name))
            if pid is None:
                missing.append(c)
            out[c.id] = pid
        for c in missing:
            out[c.id] = self._state_pid(path, c.name) if path is not None else self.init_pid(c.name)
        return out

    def _state_pid(self, socket_path: str, name: str) -> int | None:
        """The init PID from ``/1.0/instances/NAME/state`` over the socket (stdlib HTTP: a
        long-lived process such as the monitor keeps no pylxd session open for it)."""
        try:
            state = _http.get_json(socket_path, f"/1.0/instances/{quote(name, safe='')}/state", kind=dict)
        except (OSError, ValueError, _http.HTTPStatusError):
            return None  # gone, or the daemon is busy: the next listing asks again
        meta = state.get("metadata") or {}
        pid = meta.get("pid")
        return pid if isinstance(pid, int) and pid > 0 and meta.get("status") in ("Running", "Frozen") else None
