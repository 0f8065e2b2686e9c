"""Where the LXD daemon is, and whether it answers: the local socket or a remote daemon.

Local: the daemon's unix socket, ``$LXD_DIR/unix.socket``, else the first of
:data:`LXD_SOCKETS` that exists (the Debian path, then the snap's). Everything about
the local socket here uses the stdlib only (:mod:`cman._sys.unixhttp`): ``cman ps``
and ``cman engine status`` never import pylxd or ``requests``.

Remote: a daemon over HTTPS when ``CMAN_LXD_ENDPOINT`` is an ``https://`` URL, with the
client certificate ``CMAN_LXD_CERT`` and key ``CMAN_LXD_KEY`` (trusted on the server:
``lxc config trust add CERT``) and ``CMAN_LXD_VERIFY`` = the server's certificate
(pinned, as ``lxc`` does), ``false``, or unset for the system CAs.

These settings are read through :func:`cman.backends.setting` (a context bound to the
thread first, then the environment); :func:`context_settings` checks a context's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..._sys import unixhttp as _http
from ...errors import EngineUnavailable, InvalidValue
from .. import setting

if TYPE_CHECKING:
    from ...models import EngineStatus

ENV_ENDPOINT = "CMAN_LXD_ENDPOINT"
ENV_CERT = "CMAN_LXD_CERT"
ENV_KEY = "CMAN_LXD_KEY"
ENV_VERIFY = "CMAN_LXD_VERIFY"
ENV_DIR = "LXD_DIR"

LXD_SOCKETS = ("/var/lib/lxd/unix.socket", "/var/snap/lxd/common/lxd/unix.socket")

START_CMD = "lxd --group root > /var/log/lxd.log 2>&1 & lxd waitready"
FIX_GROUP = "add your user to the lxd group: usermod -aG lxd $USER, then log in again (or run as root)"
FIX_INIT = "initialise it: lxd init --auto, or lxd init to choose a storage pool and a bridge"


def lxd_socket() -> str:
    """LXD's local socket: $LXD_DIR/unix.socket, else the first that exists."""
    if lxd_dir := setting(ENV_DIR):
        return os.path.join(lxd_dir, "unix.socket")
    for path in LXD_SOCKETS:
        if os.path.exists(path):
            return path
    return LXD_SOCKETS[0]


def reachable() -> bool:
    """Cheap: a configured remote counts as reachable (asking costs a TLS handshake);
    the local socket must accept a connection."""
    if setting(ENV_ENDPOINT):
        return True
    return _http.connects(lxd_socket())


def fix_for_missing_daemon() -> str:
    if shutil.which("lxd") is None:
        return f"install LXD: apt-get install lxd lxd-client, then start it: {START_CMD}"
    return f"start the daemon: {START_CMD}"


class _Remote:
    """``CMAN_LXD_*`` settings of a remote daemon; ``None`` from :meth:`from_env` means local."""

    def __init__(self, endpoint: str, cert: tuple[str, str], verify: bool | str) -> None:
        self.endpoint = endpoint
        self.cert = cert
        self.verify = verify
        parsed = urlparse(endpoint)
        self.host = parsed.hostname or ""
        self.port = parsed.port or 8443

    @classmethod
    def from_env(cls) -> _Remote | None:
        endpoint = (setting(ENV_ENDPOINT) or "").strip()
        if not endpoint:
            return None
        if not endpoint.startswith("https://") or not urlparse(endpoint).hostname:
            raise EngineUnavailable(
                "lxd",
                f"{ENV_ENDPOINT}={endpoint!r} is not an https:// URL",
                f"set it like https://HOST:8443, or unset {ENV_ENDPOINT} for the local socket",
            )
        cert, key = setting(ENV_CERT) or "", setting(ENV_KEY) or ""
        fix = (
            f"set {ENV_CERT} and {ENV_KEY} to a client certificate and key (openssl req -x509 -newkey ec ...) "
            "and trust it on the server: lxc config trust add CERT"
        )
        if not cert or not key:
            raise EngineUnavailable("lxd", f"{ENV_ENDPOINT} is set but {ENV_CERT}/{ENV_KEY} are not", fix)
        for path in (cert, key):
            if not os.path.isfile(path):
                raise EngineUnavailable("lxd", f"client certificate file {path} does not exist", fix)
        raw = (setting(ENV_VERIFY) or "").strip()
        verify: bool | str = True
        if raw.lower() in ("false", "0", "no", "off"):
            verify = False
        elif raw and raw.lower() not in ("true", "1", "yes", "on"):
            if not os.path.isfile(raw):
                raise EngineUnavailable(
                    "lxd", f"{ENV_VERIFY}={raw} is not a file",
                    "point it at the server's certificate (server.crt in its LXD directory), or set it to false",
                )
            verify = raw
        return cls(endpoint.rstrip("/"), (cert, key), verify)


def context_settings(url: str | None, options: Mapping[str, str]) -> dict[str, str]:
    """An LXD context's settings: ``https://HOST[:PORT]`` with ``cert`` and ``key`` (a client
    certificate the server trusts) and ``verify`` (the server's certificate, ``false``, or
    ``true`` for the system CAs); or ``unix:///DIR/unix.socket`` (a local daemon's LXD_DIR).
    Paths are stored absolute and must be files now."""
    url = (url or "").strip()
    unknown = sorted(set(options) - {"cert", "key", "verify"})
    if unknown:
        raise InvalidValue("option of an LXD context", f"--{unknown[0]}", "use --cert, --key and --verify")
    empty = {ENV_ENDPOINT: "", ENV_CERT: "", ENV_KEY: "", ENV_VERIFY: "", ENV_DIR: ""}
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        if options:
            raise InvalidValue("--lxd", url, "a unix socket takes no --cert, --key or --verify")
        if not os.path.isabs(path) or os.path.basename(path) != "unix.socket" or any(c in path for c in "\0\n"):
            raise InvalidValue("--lxd", url, "write unix:///LXD_DIR/unix.socket")
        return {**empty, ENV_DIR: os.path.dirname(os.path.normpath(path))}
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError as err:
        raise InvalidValue("--lxd", url, str(err)) from None
    if parsed.scheme != "https" or not parsed.hostname or parsed.path not in ("", "/") or parsed.query \
            or parsed.username or any(c.isspace() for c in url):
        raise InvalidValue("--lxd", url, "write https://HOST[:PORT] (or unix:///LXD_DIR/unix.socket)")
    out = {**empty, ENV_ENDPOINT: f"https://{parsed.netloc}"}
    if port is None:
        out[ENV_ENDPOINT] += ":8443"
    for option, env in (("cert", ENV_CERT), ("key", ENV_KEY)):
        value = options.get(option)
        if not value:
            raise InvalidValue("--lxd", url, "an https:// context needs --cert and --key (a client certificate "
                               "the server trusts: lxc config trust add CERT)")
        out[env] = _existing_file(f"--{option}", value)
    verify = options.get("verify", "").strip()
    if verify.lower() in ("false", "0", "no", "off"):
        out[ENV_VERIFY] = "false"
    elif verify and verify.lower() not in ("true", "1", "yes", "on"):
        out[ENV_VERIFY] = _existing_file("--verify", verify)
    return out


def _existing_file(option: str, path: str) -> str:
    if any(c in path for c in "\0\n") or not os.path.isfile(path):
        raise InvalidValue(option, path, "no such file")
    return os.path.abspath(path)


def remote_session(remote: _Remote) -> Any:
    """pylxd's HTTPS session, minus one trap: requests lets $REQUESTS_CA_BUNDLE /
    $CURL_CA_BUNDLE replace a per-session ``verify``, so pylxd would pin the first CA of
    the system bundle instead of the server's certificate (or verify when told not to).
    The environment is ignored for that; proxies from it (with NO_PROXY) still apply."""
    import requests.utils
    from pylxd.client import get_session_for_url

    session = get_session_for_url(remote.endpoint, verify=remote.verify, cert=remote.cert)
    if remote.verify is False:  # the user said so: no warning on every request
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    if remote.verify is not True:
        session.trust_env = False
        session.proxies = requests.utils.get_environ_proxies(remote.endpoint)
    return session


def probe_local() -> EngineStatus:
    from ...models import EngineStatus  # not at import: reachable() is asked at every start

    """The local daemon's status, asked over its socket with the stdlib; never raises."""
    installed = shutil.which("lxd") is not None
    path = lxd_socket()
    endpoint = f"unix://{path}"
    if not os.path.exists(path):
        missing = (
            f"the LXD daemon is not running (no socket at {path})" if installed
            else "LXD is not installed (no lxd binary)"
        )
        return EngineStatus("lxd", installed, False, False, endpoint=endpoint, problem=missing,
                            fix=fix_for_missing_daemon())
    try:
        info = _http.get_json(path, "/1.0", timeout=5)["metadata"]
    except PermissionError:
        return EngineStatus("lxd", installed, True, False, endpoint=endpoint,
                            problem=f"permission denied on {path}", fix=FIX_GROUP)
    except ConnectionRefusedError:
        return EngineStatus("lxd", installed, False, False, endpoint=endpoint,
                            problem=f"nothing listens on {path} (stale socket: the daemon is not running)",
                            fix=fix_for_missing_daemon())
    except (OSError, _http.HTTPStatusError, ValueError, KeyError, TypeError) as err:
        return EngineStatus("lxd", installed, True, False, endpoint=endpoint,
                            problem=f"the daemon at {path} does not answer: {err}",
                            fix="check /var/log/lxd.log, then restart it: lxd shutdown; " + START_CMD)
    version = str((info.get("environment") or {}).get("server_version") or info.get("api_version") or "")
    if info.get("auth") != "trusted":
        return EngineStatus("lxd", installed, True, False, version=version, endpoint=endpoint,
                            problem=f"the daemon does not trust this user on {path}", fix=FIX_GROUP)
    problem: str | None = None
    fix: str | None = None
    with contextlib.suppress(OSError, _http.HTTPStatusError, ValueError, KeyError, TypeError):
        devices = _http.get_json(path, "/1.0/profiles/default", timeout=5)["metadata"].get("devices") or {}
        if not any(d.get("type") == "disk" and d.get("path") == "/" for d in devices.values()):
            problem = "LXD is not initialised: the default profile has no root disk"
            fix = FIX_INIT
    return EngineStatus("lxd", installed, True, True, version=version, endpoint=endpoint, problem=problem, fix=fix)
