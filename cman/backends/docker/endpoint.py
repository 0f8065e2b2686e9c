"""Where the Docker daemon is: DOCKER_HOST, read as the docker CLI reads it.

Unset or empty means the local socket (``unix:///var/run/docker.sock``);
``unix://PATH`` is another local socket; ``tcp://`` (with DOCKER_TLS_VERIFY and
DOCKER_CERT_PATH) is this host only on a loopback address; ``ssh://`` is another
host. Everything here is cheap and imports no SDK: the registry calls
:func:`reachable` to pick a default backend, :func:`probe` says what is wrong and
how to fix it, and :func:`open_transport` picks one of :mod:`.api`'s transports.

The settings are read through :func:`cman.backends.setting`: a context bound to the thread
(``cman --context``) comes first, the environment second. :func:`context_settings` checks
a context's URL.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from ..._sys import unixhttp
from ...errors import CmanError, InvalidValue
from .. import setting
from .api import ApiError, SdkTransport, SshTransport, Transport, UnixTransport, ssh_argv

if TYPE_CHECKING:  # models and base load when probing: reachable() is asked at every start
    from ...models import EngineStatus
    from ..base import Locality

DEFAULT_HOST = "unix:///var/run/docker.sock"
SETTINGS = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
"""What says where the daemon is (the docker CLI's variables); a context sets all of them."""


def docker_host() -> str:
    """DOCKER_HOST; unset or empty means the default socket, as for docker."""
    return setting("DOCKER_HOST") or DEFAULT_HOST


def context_settings(url: str | None, options: Mapping[str, str]) -> dict[str, str]:
    """A Docker context's settings: ``unix:///PATH``, ``tcp://HOST:PORT`` (plain: TLS comes
    from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH only) or ``ssh://[USER@]HOST[:PORT]``."""
    if options:
        raise InvalidValue("option of a Docker context", f"--{next(iter(options))}",
                           "a Docker context takes only its URL")
    host = (url or "").strip()
    scheme = host.partition("://")[0] if "://" in host else ""
    if any(c.isspace() or not c.isprintable() for c in host):
        raise InvalidValue("--docker", host, "must not contain blanks or control characters")
    if scheme == "unix":
        path = host[len("unix://"):]
        if not os.path.isabs(path):
            raise InvalidValue("--docker", host, "write unix:///ABSOLUTE/PATH/docker.sock")
    elif scheme == "tcp":
        try:
            parsed = urlparse(host.replace("tcp://", "http://", 1))
            port = parsed.port
        except ValueError as err:
            raise InvalidValue("--docker", host, str(err)) from None
        if not parsed.hostname or port is None or parsed.path not in ("", "/") or parsed.query:
            raise InvalidValue("--docker", host, "write tcp://HOST:PORT")
    elif scheme == "ssh":
        try:
            ssh_argv(host)
        except ConnectionError:
            raise InvalidValue("--docker", host, "write ssh://[USER@]HOST[:PORT]") from None
    else:
        raise InvalidValue("--docker", host, "the URL must start with unix://, tcp:// or ssh://")
    return {"DOCKER_HOST": host.rstrip("/") if scheme != "unix" else host, "DOCKER_TLS_VERIFY": "",
            "DOCKER_CERT_PATH": ""}


def _sdk_environment() -> dict[str, str]:
    """The environment docker-py reads for tcp:// (kwargs_from_env), with the bound settings."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env.update({k: v for k in SETTINGS if (v := setting(k))})
    return env


def docker_socket() -> str | None:
    """The unix socket path DOCKER_HOST points at, or None for tcp/ssh hosts."""
    host = docker_host()
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return None


def _tcp_connects(url: str) -> bool:
    parsed = urlparse(url.replace("tcp://", "http://", 1))
    if not parsed.hostname:
        return False
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 2375), timeout=1.0):
            return True
    except OSError:
        return False


def reachable() -> bool:
    """A socket connect (or, for ssh://, an ssh on PATH): no request, no SDK."""
    host = docker_host()
    if host.startswith("ssh://"):
        import shutil  # not at import: reachable() is asked at every start

        return shutil.which("ssh") is not None
    if host.startswith("tcp://"):
        return _tcp_connects(host)
    path = docker_socket()
    return path is not None and unixhttp.connects(path)


def locality() -> Locality:
    from ..base import Locality, loopback_url

    host = docker_host()
    if docker_socket() is not None or (host.startswith("tcp://") and loopback_url(host)):
        return Locality(True, host)
    return Locality(False, host, f"DOCKER_HOST={host}")


def open_transport() -> Transport:
    """The transport for DOCKER_HOST; OSError when it cannot be set up (a bad ssh URL, the SDK refused)."""
    path = docker_socket()
    if path is not None:
        return UnixTransport(path)
    host = docker_host()
    return SshTransport(host) if host.startswith("ssh://") else SdkTransport(_sdk_environment())


def _fix_for_missing_daemon() -> str:
    import shutil

    if shutil.which("dockerd") is None:
        return "install Docker: apt-get install docker.io, then start it: dockerd > /var/log/dockerd.log 2>&1 &"
    return "start the daemon: dockerd > /var/log/dockerd.log 2>&1 & (or: systemctl start docker)"


def probe() -> EngineStatus:
    """Is the daemon at DOCKER_HOST installed, running and answering? Never raises; says the fix."""
    import shutil

    from ...models import EngineStatus

    host = docker_host()
    installed = shutil.which("dockerd") is not None or shutil.which("docker") is not None
    path = docker_socket()
    if path is not None:
        return _probe_socket(path, host, installed)
    fix = f"check that a Docker daemon listens at {host} (DOCKER_HOST), or unset DOCKER_HOST to use the local socket"
    if host.startswith("ssh://"):
        fix = ("check that ssh to that host works without a prompt (cman runs `ssh -o BatchMode=yes HOST docker "
               "system dial-stdio`: use a key or ssh-agent) and that `docker` is on the remote PATH, "
               "or unset DOCKER_HOST to use the local socket")
    if host.startswith("tcp://") and not _tcp_connects(host):
        return EngineStatus("docker", installed, False, False, endpoint=host,
                            problem=f"nothing listens at {host}", fix=fix)
    try:
        # ssh: ConnectTimeout bounds ssh's connect and handshake, the timeout the answer.
        transport = open_transport()
        transport.ping_timeout = 10
        version = transport.call("GET", "/version", timeout=10, kind=dict)
        transport.close()
    except (ApiError, OSError, CmanError) as err:
        return EngineStatus("docker", installed, False, False, endpoint=host,
                            problem=f"cannot talk to the daemon at {host}: {err}", fix=fix)
    return EngineStatus("docker", installed, True, True, version=str(version.get("Version")), endpoint=host)


def _probe_socket(path: str, host: str, installed: bool) -> EngineStatus:
    from ...models import EngineStatus

    if not os.path.exists(path):
        return EngineStatus("docker", installed, False, False, endpoint=host,
                            problem=f"the Docker daemon is not running (no socket at {path})",
                            fix=_fix_for_missing_daemon())
    transport = UnixTransport(path)
    transport.ping_timeout = 5
    try:
        info = transport.call("GET", "/version", timeout=5, kind=dict)
    except PermissionError:
        return EngineStatus("docker", installed, True, False, endpoint=host,
                            problem=f"permission denied on {path}",
                            fix="add your user to the docker group: usermod -aG docker $USER, then log in again (or run as root)")
    except ConnectionRefusedError:
        return EngineStatus("docker", installed, False, False, endpoint=host,
                            problem=f"nothing listens on {path} (stale socket: the daemon is not running)",
                            fix=_fix_for_missing_daemon())
    except (OSError, ApiError, CmanError) as err:
        return EngineStatus("docker", installed, True, False, endpoint=host,
                            problem=f"the daemon at {path} does not answer: {err}",
                            fix="check /var/log/dockerd.log, then restart dockerd")
    return EngineStatus("docker", installed, True, True, version=str(info.get("Version")), endpoint=host)
