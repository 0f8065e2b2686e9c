"""Cheap engine reachability checks that import no engine SDK."""

from __future__ import annotations

import os
import shutil
import socket
from urllib.parse import urlparse

LXD_SOCKETS = ("/var/lib/lxd/unix.socket", "/var/snap/lxd/common/lxd/unix.socket")


def docker_socket() -> str | None:
    """The unix socket path DOCKER_HOST points at, or None for tcp/ssh hosts."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"  # empty means the default, as for docker
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return None


def lxd_socket() -> str:
    """LXD's local socket: $LXD_DIR/unix.socket, else the first that exists."""
    if lxd_dir := os.environ.get("LXD_DIR"):
        return os.path.join(lxd_dir, "unix.socket")
    for path in LXD_SOCKETS:
        if os.path.exists(path):
            return path
    return LXD_SOCKETS[0]


def _connects(path: str) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _tcp_connects(url: str) -> bool:
    parsed = urlparse(url.replace("tcp://", "http://", 1))
    if not parsed.hostname:
        return False
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 2375), timeout=1.0):
            return True
    except OSError:
        return False


def reachable(name: str) -> bool:
    if name == "docker":
        host = os.environ.get("DOCKER_HOST") or ""
        if host.startswith("ssh://"):
            return shutil.which("ssh") is not None
        if host.startswith("tcp://"):
            return _tcp_connects(host)
        path = docker_socket()
        return path is not None and _connects(path)
    if name == "lxd":
        if os.environ.get("CMAN_LXD_ENDPOINT"):
            return True
        return _connects(lxd_socket())
    if name == "lxc":
        return shutil.which("lxc-start") is not None
    return False
