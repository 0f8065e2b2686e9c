"""No inter-container communication (``--no-icc``) on the host side, the same for every backend.

Bridge port isolation: ``bridge link set dev VETH isolated on``. Isolated ports of a
bridge exchange no frames with each other (not even ARP), while the bridge itself,
the gateway, stays reachable. This is what no-ICC means in cman on every backend,
because the engines' own switches fall short: Docker's ``enable_icc=false`` blocks
IP only (ARP goes through), and LXD 5.0 accepts ``security.port_isolation`` on a NIC
without applying it.

:func:`enforce` is the one policy: find each container's host veth on each no-ICC
bridge (from its init PID: the peer index of the interfaces in its network
namespace, or the port name the engine reports), isolate it, and if that cannot be
done, stop the container: it must not run with less isolation than its network
promises. Isolation holds until the veth goes; an engine that makes a new veth
(every start) needs :func:`enforce` again, which every backend does after each
start through cman (LXC even before start, from a ``lxc.net.0.script.up`` hook).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CmanError, EngineError
from .netfilter import link_exists, need_tool, run_tool

HOOK_SCRIPT = """\
#!/bin/sh
# Written by cman: this container is on a no-ICC network. LXC (also under LXD, through
# raw.lxc) runs this on the host
# once the container's veth is on the bridge, before the container starts, with the
# arguments NAME net up veth BRIDGE HOST_VETH. An isolated bridge port exchanges no
# frames (not even ARP) with the other isolated ports; the gateway stays reachable.
PATH=/usr/sbin:/sbin:/usr/bin:/bin
if [ "$4" != veth ] || [ -z "$6" ]; then
    echo "cman: unexpected hook arguments: $*" >&2
    exit 1
fi
exec bridge link set dev "$6" isolated on
"""
_UNSAFE = re.compile(r"[^A-Za-z0-9_./+-]")


def write_hook(path: Path) -> None:
    """The no-ICC hook script at ``path`` (LXC refuses to start when a hook is missing)."""
    from .._sys.files import atomic_write

    atomic_write(path, HOOK_SCRIPT, mode=0o755)


def hook_value(hook: Path) -> str:
    """``lxc.net.N.script.up`` for the script at ``hook``.

    LXC drops quotes around a config value and runs ``sh -c "exec VALUE ARGS..."``, so
    quoting does not survive (seen on LXC 5.0): every character outside a safe set is
    escaped with a backslash instead, which an LXC path with spaces needs.
    """
    return _UNSAFE.sub(r"\\\g<0>", str(hook))


HINT = "cman needs root and iproute2's `bridge` and util-linux's `nsenter` for no-ICC networks"


@dataclass(frozen=True)
class Port:
    """A container's attachment to a no-ICC network's bridge."""

    network: str
    bridge: str
    name: str | None = None
    """The host veth's name when the engine reports it (LXD's ``volatile.*.host_name``)."""


def _links(*args: str, netns_pid: int | None = None) -> list[dict[str, Any]]:
    argv = ["ip", "-j", "-d", "link", "show", *args]
    if netns_pid is not None:
        argv = [need_tool("nsenter", "util-linux"), "-t", str(netns_pid), "-n", *argv]
    need_tool("ip", "iproute2")
    proc = run_tool(argv, check=False)
    if proc.returncode != 0:
        if netns_pid is not None:
            raise EngineError(f"cannot read the interfaces of process {netns_pid}: {proc.stderr.strip()}")
        return []
    data = json.loads(proc.stdout or "[]")
    return data if isinstance(data, list) else []


def bridge_ports(bridge: str) -> dict[str, bool]:
    """The ports of ``bridge`` -> whether each is isolated."""
    if not link_exists(bridge):
        return {}
    need_tool("bridge", "iproute2")
    # `bridge link show master BR` ignores the filter on iproute2 6.1: filter here.
    proc = run_tool(["bridge", "-j", "-d", "link", "show"], check=False)
    if proc.returncode != 0:
        return {}
    return {
        str(p["ifname"]): bool(p.get("isolated"))
        for p in json.loads(proc.stdout or "[]")
        if p.get("ifname") and p.get("master") == bridge
    }


def set_port_isolation(port: str, isolated: bool = True) -> None:
    """``bridge link set dev PORT isolated on|off``."""
    need_tool("bridge", "iproute2")
    run_tool(["bridge", "link", "set", "dev", port, "isolated", "on" if isolated else "off"])


def container_port(pid: int, bridge: str) -> str:
    """The host-side veth, on ``bridge``, of the container whose init process is ``pid``.

    Inside the container's network namespace each veth reports its peer's ifindex
    (``link_index``); the host interface with that index and ``bridge`` as master is
    the port. Raises EngineError when the container has no interface on the bridge.
    """
    peers = {int(link["link_index"]) for link in _links(netns_pid=pid) if "link_index" in link}
    for link in _links("master", bridge):
        if int(link.get("ifindex", -1)) in peers:
            return str(link["ifname"])
    raise EngineError(f"the container with init pid {pid} has no interface on bridge {bridge}")


def isolate_container(pid: int, bridge: str) -> str:
    """Turn on port isolation for the container's veth on ``bridge``; returns the veth's name."""
    port = container_port(pid, bridge)
    set_port_isolation(port, True)
    return port


def enforce(backend: str, container: str, pid: int | None, ports: Iterable[Port], stop: Callable[[], None]) -> list[str]:
    """Isolate the container's veth on each port's bridge; on failure stop it and raise.

    Returns the isolated veths. The EngineError says why, and that the container was
    stopped, or, when ``stop`` failed too, that it could not be stopped and still runs.
    """
    done: list[str] = []
    current: Port | None = None
    try:
        for port in ports:
            current = port
            if port.name and bridge_ports(port.bridge).get(port.name) is not None:
                set_port_isolation(port.name, True)
                done.append(port.name)
                continue
            if not pid:
                raise EngineError(f"the container has no init process to find its port on {port.bridge} from")
            done.append(isolate_container(pid, port.bridge))
    except CmanError as err:
        if pid and not os.path.exists(f"/proc/{pid}"):
            # The container's init is gone: its job ended (`run --rm IMAGE true`) before its port
            # could be found, and the engine has taken its veth away. Nothing is left to isolate.
            return done
        where = f" {current.network}" if current is not None else ""
        try:
            stop()
        except CmanError as failed:
            raise EngineError(
                f"{backend}: {container} could not be isolated on its no-ICC network{where} ({err}) and could not"
                f" be stopped either ({failed}): it may be running without isolation",
                hint=f"stop it now: cman stop {backend}:{container}",
            ) from err
        raise EngineError(f"{backend}: {container} was stopped: cannot isolate it on its no-ICC network{where} ({err})",
                          hint=HINT) from err
    return done
