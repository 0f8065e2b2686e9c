"""LXD backend over ``pylxd``: system containers behind cman's verbs.

Connection. The local daemon's unix socket (:func:`_reach.lxd_socket`: ``$LXD_DIR``,
else the Debian or snap path). A remote daemon over HTTPS when ``CMAN_LXD_ENDPOINT``
is an ``https://`` URL, with the client certificate ``CMAN_LXD_CERT`` and key
``CMAN_LXD_KEY`` (trusted on the server: ``lxc config trust add CERT``) and
``CMAN_LXD_VERIFY`` = the server's certificate (pinned, as ``lxc`` does), ``false``,
or unset for the system CAs. pylxd (and ``requests``) are imported on first use, never
at import time; ``cman ps`` lists local instances with the stdlib (:mod:`._http`).

What ``run IMAGE CMD...`` means on LXD (``system_containers = True``). An LXD
container boots its image's init; CMD is the container's *job*, executed inside it.
The container lives as long as its job, as a Docker container lives as long as its
command:

- ``run IMAGE CMD`` (foreground, :meth:`LxdBackend.start_attached`): boot, run CMD
  through LXD's exec websockets with the caller's streams (a pty with ``-t``), return
  its exit code. The job's exit code and (the last MiB of) its output are then written
  to ``/var/log/cman/job.{rc,out,err}`` in the container, and the container is stopped
  with force - whatever else still runs in it is killed, as Docker's PID-1 exit kills
  the rest of the container. If cman is interrupted (SIGINT/SIGTERM/SIGHUP), the signal
  is forwarded to CMD and the container is stopped; ``--rm`` then removes it.
- ``run -d IMAGE CMD`` / ``start`` (:meth:`LxdBackend.start`): boot, then start CMD
  detached - an exec without websockets, so it has no terminal and its stdin is
  /dev/null (``nohup``/``setsid`` semantics) - under a fixed ``/bin/sh`` wrapper that
  gets CMD as positional arguments (``sh -c WRAPPER cman-job CMD...``: no shell string is
  ever built from user input). The wrapper appends stdout/stderr to
  ``/var/log/cman/job.out``/``job.err``, writes the exit code to ``job.rc`` and powers the
  container off (``poweroff -f``) when CMD ends, so ``wait`` returns the code, ``ps``
  shows the container stopped, and ``--rm -d`` (an ephemeral container) is deleted.
  ``restart`` boots again and re-runs CMD; logs accumulate.
- ``run IMAGE`` without CMD: with ``-i`` (and ``-t``) the job is ``/bin/sh``; without
  ``-i`` the container is booted and left running as a plain system container (like
  ``lxc launch``) and ``run`` returns 0. ``start`` of a container without CMD just boots it.
- ``logs``: the job's ``job.out`` (stdout) and ``job.err`` (stderr), read through LXD's
  file API (so also from a stopped container); ``-f`` polls every 0.3 s until the
  container stops. A container without a job shows its console log (init's output,
  which LXD serves once the container is stopped).
- ``exec`` and ``-it``: LXD's exec websockets driven by :mod:`._lxd_ws`, with a real pty
  (``interactive``) whose size follows the local terminal (``window-resize`` on the
  control websocket); stdin EOF is passed on; Ctrl-C without a pty is forwarded as
  SIGINT. Exit codes pass through (127 command not found, 126 not executable, 128+N
  killed by signal N).

Images. ``image import TARBALL NAME`` repacks a rootfs tarball as a unified LXD image
(``metadata.yaml`` with the host's architecture + ``rootfs/``) and imports it with the alias
NAME. ``pull REMOTE:ALIAS`` (``images:debian/12``) or ``pull https://HOST[:PORT][/PATH]:ALIAS``
makes the daemon copy from a simplestreams server; docker-style short names (``debian:12``)
map to those through a table that ``$CMAN_LXD_IMAGE_MAP`` extends (:mod:`._lxd_image`).
cman itself sends nothing to the image server. LXD images have no layers: ``history`` shows one.

Networks (:mod:`._lxd_net`). ``cman network create`` makes an LXD managed bridge named like
the network (so the name is an interface name, at most 15 characters) with the gateway
address, no NAT, no IPv6 and no DHCP, plus cman's DOCKER-USER rule for the bridge
(:mod:`cman.netfilter`). ``run --network NAME [--ip IP]`` gives the container one NIC ``eth0``
on it and an address that cman allocates under the host's network lock, pinned with
``raw.lxc`` so LXC sets address and default route before init on every start; after each
start or restart through cman (before the job runs) the address is checked (and set with
``ip`` in the container when missing) and, on a no-ICC network, the new host veth is
isolated on the bridge (LXD 5.0 ignores ``security.port_isolation``). ``--network none``
leaves the container with loopback only. DNS settings go into the container's
``/etc/resolv.conf``. On a remote daemon cman cannot reach the host side: the forwarding
rule is not installed and no-ICC networks are refused.

Errors from pylxd, requests and LXD's operations are translated into cman's family
in :func:`_boundary` and nowhere else; daemon messages that carry no status code of
their own are classified by one table, :data:`API_MESSAGES`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlparse

from .. import jobs
from .._sys import tty as _tty
from .._sys import unixhttp as _http
from .._sys.retry import idempotent
from ..errors import (
    CmanError,
    Conflict,
    ContainerNotFound,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    ImageNotFound,
    Interrupted,
    InUse,
    InvalidName,
    InvalidValue,
    NameInUse,
    NetworkNotFound,
)
from ..models import (
    Container,
    ContainerSpec,
    EngineStatus,
    Image,
    ImageLayer,
    LogChunk,
    PruneResult,
    PullProgress,
    State,
    StdIO,
)
from ..validate import check_name
from . import _lxd_net, _reach
from .base import Backend, Feature, Locality, loopback_url

if TYPE_CHECKING:
    import pylxd

    from ..network import Network, NetworkSpec
    from . import _lxd_image, _lxd_ws

_T = TypeVar("_T")

NAME_RE = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
NAME_RULES = (
    "LXD names are 1-63 characters of letters, digits and '-', starting with a letter and not ending with '-'"
)

ENV_ENDPOINT = "CMAN_LXD_ENDPOINT"
ENV_CERT = "CMAN_LXD_CERT"
ENV_KEY = "CMAN_LXD_KEY"
ENV_VERIFY = "CMAN_LXD_VERIFY"

CFG_MANAGED = "user.cman.managed"
CFG_COMMAND = "user.cman.command"
CFG_IMAGE = "user.cman.image"
CFG_TTY = "user.cman.tty"
CFG_INTERACTIVE = "user.cman.interactive"
CFG_LABEL = "user.cman.label."
CFG_ENV = "environment."

DEFAULT_SHELL = ("/bin/sh",)
POLL = 0.25
BUSY_WAIT = 15.0
"""How long to wait for LXD's own start/stop of an instance to finish before giving up."""
LOG_POLL = 0.3

_STATES = {
    "running": State.RUNNING,
    "frozen": State.PAUSED,
    "stopped": State.STOPPED,
    "error": State.DEAD,
    "starting": State.RESTARTING,
    "stopping": State.RUNNING,
}

# LXD reports these conditions only as text (often inside a failed operation, where the
# HTTP status is 200): one table, tested in tests/unit/test_lxd_backend.py.
API_MESSAGES: tuple[tuple[str, str], ...] = (
    ("already exists", "name-in-use"),
    ("image not found", "image-not-found"),
    ("image alias not found", "image-not-found"),
    ("instance not found", "container-not-found"),
    ("no root device could be found", "not-initialised"),
    ("no storage pool found", "not-initialised"),
    ("instance is running", "running"),
    ("instance is not running", "not-running"),
    ("is busy running", "busy"),
    ("not authorized", "untrusted"),
    ("forbidden", "untrusted"),
)


def classify_message(text: str) -> str | None:
    low = text.lower()
    for needle, kind in API_MESSAGES:
        if needle in low:
            return kind
    return None


class OperationFailed(Exception):
    """An LXD background operation ended in failure (HTTP 200, ``status: Failure``)."""

    def __init__(self, message: str, operation: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.operation: Mapping[str, Any] = operation or {}
        """The operation's final state (an exec's ``metadata.return`` is there)."""


# -- where LXD is ---------------------------------------------------------------------------


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
        endpoint = os.environ.get(ENV_ENDPOINT, "").strip()
        if not endpoint:
            return None
        if not endpoint.startswith("https://") or not urlparse(endpoint).hostname:
            raise EngineUnavailable(
                "lxd",
                f"{ENV_ENDPOINT}={endpoint!r} is not an https:// URL",
                f"set it like https://HOST:8443, or unset {ENV_ENDPOINT} for the local socket",
            )
        cert, key = os.environ.get(ENV_CERT, ""), os.environ.get(ENV_KEY, "")
        fix = (
            f"set {ENV_CERT} and {ENV_KEY} to a client certificate and key (openssl req -x509 -newkey ec ...) "
            "and trust it on the server: lxc config trust add CERT"
        )
        if not cert or not key:
            raise EngineUnavailable("lxd", f"{ENV_ENDPOINT} is set but {ENV_CERT}/{ENV_KEY} are not", fix)
        for path in (cert, key):
            if not os.path.isfile(path):
                raise EngineUnavailable("lxd", f"client certificate file {path} does not exist", fix)
        raw = os.environ.get(ENV_VERIFY, "").strip()
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


_START_CMD = "lxd --group root > /var/log/lxd.log 2>&1 & lxd waitready"
_FIX_GROUP = "add your user to the lxd group: usermod -aG lxd $USER, then log in again (or run as root)"


def _remote_session(remote: _Remote) -> Any:
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


def _fix_for_missing_daemon() -> str:
    if shutil.which("lxd") is None:
        return f"install LXD: apt-get install lxd lxd-client, then start it: {_START_CMD}"
    return f"start the daemon: {_START_CMD}"


def _unavailable(cause: BaseException | None = None) -> EngineUnavailable:
    endpoint = os.environ.get(ENV_ENDPOINT, "").strip()
    if endpoint:  # a remote daemon: probing would connect again (and fail the same way)
        return EngineUnavailable(
            "lxd", f"cannot reach the LXD daemon at {endpoint}: {_short(cause)}",
            f"check that it listens there (lxc config set core.https_address ADDR:PORT on the server), "
            f"that {ENV_VERIFY} names its certificate, and that it trusts {ENV_CERT}",
        )
    status = LxdBackend.probe()
    if status.reachable:
        return EngineUnavailable("lxd", f"lost the connection to the daemon ({cause})", "retry")
    return EngineUnavailable("lxd", status.problem or "daemon not reachable", status.fix or "")


def _short(err: BaseException | None) -> str:
    """The innermost useful line of a requests/urllib3 error chain."""
    if err is None:
        return "no answer"
    text = str(err).strip() or type(err).__name__
    for pattern in (
        r"\[SSL[^\]]*\][^'(\]]*",
        r"Fingerprints did not match[^)']*",
        r"Connection refused",
        r"timed out",
        r"Name or service not known",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(0).strip()
    return text.splitlines()[0][:300]


def _caused_by(err: BaseException, *types: type[BaseException]) -> bool:
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, types):
            return True
        stack.extend([cur.__cause__, cur.__context__, *[a for a in cur.args if isinstance(a, BaseException)]])
    return False


def _is_transient(err: BaseException) -> bool:
    """A daemon that restarts (refused connection, 502-504) is worth a retry; a missing
    socket, a permission problem or any answer of the daemon is not.

    Errors arrive already translated by :func:`_boundary`; the engine's exception is
    their ``__cause__``.
    """
    if isinstance(err, CmanError):
        if not isinstance(err, (EngineUnavailable, EngineError)):
            return False
        cause = err.__cause__
        if cause is None:
            return False
        err = cause
    if _caused_by(err, FileNotFoundError, PermissionError):
        return False
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status is not None:
        return status in (502, 503, 504)
    if isinstance(err, _http.HTTPStatusError):
        return err.status in (502, 503, 504)
    if isinstance(err, (ConnectionResetError, ConnectionRefusedError)):
        return True
    return type(err).__name__ == "ConnectionError" and type(err).__module__.startswith("requests")


def _api_text(err: BaseException) -> str:
    if isinstance(err, OperationFailed):
        return err.message
    response = getattr(err, "response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            body = response.json()
            meta = body.get("metadata")
            if isinstance(meta, dict) and meta.get("err"):
                return str(meta["err"])
            if body.get("error"):
                return str(body["error"])
    if isinstance(err, _http.HTTPStatusError):
        with contextlib.suppress(Exception):
            return str(json.loads(err.body).get("error") or err)
    return str(err).strip() or type(err).__name__


@contextlib.contextmanager
def _boundary(*, container: str | None = None, image: str | None = None, action: str = "") -> Iterator[None]:
    """Translate pylxd / requests / LXD operation errors into cman errors, once."""
    try:
        yield
    except CmanError:
        raise
    except (FileNotFoundError, PermissionError, ConnectionRefusedError) as err:
        raise _unavailable(err) from err
    except Exception as err:
        raise _translate(err, container=container, image=image, action=action) from err


def _translate(err: Exception, *, container: str | None, image: str | None, action: str) -> CmanError:
    import requests.exceptions
    from pylxd import exceptions as lxd_exc

    from ._lxd_ws import WebSocketError

    where = f"lxd{(' ' + action) if action else ''}"
    if isinstance(err, WebSocketError):
        return EngineError(f"{where}: {err}")
    if isinstance(err, lxd_exc.ClientConnectionFailed):
        return _unavailable(err)
    if isinstance(err, requests.exceptions.Timeout):
        return EngineTimeout(f"LXD did not answer in time{(' to ' + action) if action else ''}")
    if isinstance(err, requests.exceptions.ConnectionError):
        return _unavailable(err)
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, _http.HTTPStatusError):
        status = err.status
    if not isinstance(err, (lxd_exc.LXDAPIException, OperationFailed, _http.HTTPStatusError)):
        return EngineError(f"{where}: {type(err).__name__}: {err}")
    text = _api_text(err)
    kind = classify_message(text)
    if status == 404 or kind in ("image-not-found", "container-not-found"):
        if kind == "image-not-found" or (container is None and image is not None):
            return ImageNotFound(image or "?", "lxd", text)
        if container is not None:
            return ContainerNotFound(container, "lxd")
        return ImageNotFound(image or "?", "lxd", text)
    if kind == "name-in-use" and container is not None:
        return NameInUse(container, "lxd")
    if status == 403 or kind == "untrusted":
        return EngineUnavailable(
            "lxd", f"the daemon refused access: {text}",
            "trust this client's certificate on the server (lxc config trust add CERT) or use the local socket as root",
        )
    if kind == "not-initialised":
        return EngineUnavailable(
            "lxd", f"LXD is not initialised ({text})",
            "initialise it: lxd init --auto (here: the preseed in scripts/setup-engines.sh)",
        )
    if kind == "running" and container is not None:
        return Conflict(f"container {container} is running", hint=f"stop it first (cman stop lxd:{container})")
    if kind == "not-running" and container is not None:
        return Conflict(f"container {container} is not running", hint=f"start it first: cman start lxd:{container}")
    if status == 409:
        return Conflict(f"{where}: {text}")
    return EngineError(f"{where}: {text}")


# -- conversions ------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = re.sub(r"(\.\d{6})\d*", r"\1", value).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _command_of(config: Mapping[str, Any]) -> tuple[str, ...]:
    raw = config.get(CFG_COMMAND)
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _state_of(raw: Mapping[str, Any]) -> State:
    status = str(raw.get("status", "")).lower()
    state = _STATES.get(status, State.UNKNOWN)
    if state == State.STOPPED and "volatile.last_state.power" not in (raw.get("config") or {}):
        return State.CREATED  # never started: LXD sets last_state.power on the first start
    return state


def _addresses(raw: Mapping[str, Any]) -> dict[str, str]:
    """Network name -> IPv4 address: what each NIC has now; for a container that does not
    run, the address cman allocated to it on its cman network (it gets it at start)."""
    state = raw.get("state") or {}
    network = state.get("network") or {}
    config = raw.get("config") or {}
    out: dict[str, str] = {}
    for dev_name, dev in (raw.get("expanded_devices") or {}).items():
        if dev.get("type") != "nic":
            continue
        key = str(dev.get("network") or dev.get("parent") or dev_name)
        iface = dev.get("name") or dev_name
        for addr in (network.get(iface) or {}).get("addresses") or []:
            if addr.get("family") == "inet" and addr.get("scope") == "global":
                out[key] = str(addr.get("address"))
                break
        if not network and key not in out and config.get(_lxd_net.CFG_NETWORK) == key \
                and config.get(_lxd_net.CFG_IP):
            out[key] = str(config[_lxd_net.CFG_IP])
    return out


def _container_from_raw(raw: Mapping[str, Any], exit_code: int | None = None) -> Container:
    """From GET /1.0/instances/NAME?recursion=1 or an item of /1.0/instances?recursion=2."""
    config = raw.get("config") or {}
    expanded = raw.get("expanded_config") or config
    state = _state_of(raw)
    pid = (raw.get("state") or {}).get("pid") or None
    labels = {k[len(CFG_LABEL) :]: str(v) for k, v in config.items() if k.startswith(CFG_LABEL)}
    base_image = str(config.get("volatile.base_image") or "")
    status = "Created" if state == State.CREATED else str(raw.get("status", ""))
    if state == State.STOPPED and exit_code is not None:
        status = f"Exited ({exit_code})"
    return Container(
        backend="lxd",
        id=str(raw["name"]),
        name=str(raw["name"]),
        image=str(config.get(CFG_IMAGE) or config.get("image.description") or base_image[:12]),
        state=state,
        status=status,
        managed=config.get(CFG_MANAGED) == "true",
        created=_parse_time(raw.get("created_at")),
        command=_command_of(config),
        labels=labels,
        pid=int(pid) if pid and state in (State.RUNNING, State.PAUSED) else None,
        exit_code=exit_code if state == State.STOPPED else None,
        addresses=_addresses(raw),
        extra={
            "type": raw.get("type"),
            "ephemeral": bool(raw.get("ephemeral")),
            "profiles": list(raw.get("profiles") or []),
            "architecture": raw.get("architecture"),
            "base_image": config.get("volatile.base_image"),
            "uuid": config.get("volatile.uuid"),
            "tty": config.get(CFG_TTY) == "true",
            "interactive": config.get(CFG_INTERACTIVE) == "true",
            "env": {k[len(CFG_ENV) :]: v for k, v in expanded.items() if k.startswith(CFG_ENV)},
            "limits": {k: v for k, v in expanded.items() if k.startswith("limits.")},
            "status_code": raw.get("status_code"),
            "last_used_at": raw.get("last_used_at"),
        },
    )


def _image_from_raw(raw: Mapping[str, Any]) -> Image:
    props = raw.get("properties") or {}
    return Image(
        backend="lxd",
        id=str(raw["fingerprint"]),
        tags=tuple(str(a["name"]) for a in raw.get("aliases") or []),
        size=raw.get("size"),
        created=_parse_time(raw.get("created_at")) or _parse_time(raw.get("uploaded_at")),
        architecture=raw.get("architecture"),
        extra={
            "properties": dict(props),
            "public": bool(raw.get("public")),
            "type": raw.get("type"),
            "cached": bool(raw.get("cached")),
            "auto_update": bool(raw.get("auto_update")),
            "uploaded_at": raw.get("uploaded_at"),
            "update_source": raw.get("update_source"),
        },
    )


def cpu_allowance(cpus: float) -> str:
    """``--cpus`` as a CFS quota, Docker's meaning: 0.5 -> "50ms/100ms", 2 -> "200ms/100ms"."""
    return f"{max(1, round(cpus * 100))}ms/100ms"


# -- the backend ---------------------------------------------------------------------------


class LxdBackend(Backend):
    name = "lxd"
    system_containers = True
    capabilities = frozenset(Feature)

    def __init__(self) -> None:
        self._client: pylxd.Client | None = None
        self._remote_checked = False
        self._remote: _Remote | None = None

    # -- connection -------------------------------------------------------------------

    @property
    def remote(self) -> _Remote | None:
        if not self._remote_checked:
            self._remote = _Remote.from_env()
            self._remote_checked = True
        return self._remote

    def locality(self) -> Locality:
        endpoint = os.environ.get(ENV_ENDPOINT, "").strip()
        if not endpoint:
            return Locality(True, f"unix://{_reach.lxd_socket()}")
        local = loopback_url(endpoint)
        return Locality(local, endpoint, None if local else f"{ENV_ENDPOINT}={endpoint}")

    def remote_features(self) -> frozenset[Feature]:
        return frozenset({Feature.NETWORK_DNS})  # resolv.conf goes in through LXD's file API

    @property
    def _socket(self) -> str | None:
        return None if self.remote is not None else _reach.lxd_socket()

    @property
    def client(self) -> pylxd.Client:
        if self._client is None:
            import pylxd as sdk

            remote = self.remote
            with _boundary(action="connect"):
                if remote is None:
                    path = _reach.lxd_socket()
                    if not os.path.exists(path):
                        raise _unavailable()
                    client = sdk.Client(endpoint=path, timeout=120)
                else:
                    client = sdk.Client(
                        endpoint=remote.endpoint, cert=remote.cert, verify=remote.verify, timeout=120,
                        session=_remote_session(remote),
                    )
                if not client.trusted:
                    raise EngineUnavailable(
                        "lxd",
                        f"{remote.endpoint if remote else 'the daemon'} does not trust this client"
                        + (f"'s certificate {remote.cert[0]}" if remote else ""),
                        "on the server: lxc config trust add CERT (locally: run as root or in the lxd group)",
                    )
            self._client = client
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.api.session.close()
            self._client = None

    def _dial(self) -> tuple[_lxd_ws.Dial, str]:
        from . import _lxd_ws

        remote = self.remote
        if remote is None:
            return _lxd_ws.unix_dialer(_reach.lxd_socket()), "lxd"
        return _lxd_ws.tls_dialer(remote.host, remote.port, cert=remote.cert, verify=remote.verify), remote.host

    @classmethod
    def probe(cls) -> EngineStatus:
        installed = shutil.which("lxd") is not None
        try:
            remote = _Remote.from_env()
        except EngineUnavailable as err:
            return EngineStatus("lxd", installed, False, False, endpoint=os.environ.get(ENV_ENDPOINT),
                                problem=err.problem, fix=err.fix)
        if remote is not None:
            return cls._probe_remote(remote, installed)
        path = _reach.lxd_socket()
        endpoint = f"unix://{path}"
        if not os.path.exists(path):
            missing = (
                f"the LXD daemon is not running (no socket at {path})" if installed
                else "LXD is not installed (no lxd binary)"
            )
            return EngineStatus("lxd", installed, False, False, endpoint=endpoint, problem=missing,
                                fix=_fix_for_missing_daemon())
        try:
            info = _http.get_json(path, "/1.0", timeout=5)["metadata"]
        except PermissionError:
            return EngineStatus("lxd", installed, True, False, endpoint=endpoint,
                                problem=f"permission denied on {path}",
                                fix=_FIX_GROUP)
        except ConnectionRefusedError:
            return EngineStatus("lxd", installed, False, False, endpoint=endpoint,
                                problem=f"nothing listens on {path} (stale socket: the daemon is not running)",
                                fix=_fix_for_missing_daemon())
        except (OSError, _http.HTTPStatusError, ValueError, KeyError, TypeError) as err:
            return EngineStatus("lxd", installed, True, False, endpoint=endpoint,
                                problem=f"the daemon at {path} does not answer: {err}",
                                fix="check /var/log/lxd.log, then restart it: lxd shutdown; " + _START_CMD)
        version = str((info.get("environment") or {}).get("server_version") or info.get("api_version") or "")
        if info.get("auth") != "trusted":
            return EngineStatus("lxd", installed, True, False, version=version, endpoint=endpoint,
                                problem=f"the daemon does not trust this user on {path}",
                                fix=_FIX_GROUP)
        problem: str | None = None
        fix: str | None = None
        with contextlib.suppress(OSError, _http.HTTPStatusError, ValueError, KeyError, TypeError):
            devices = _http.get_json(path, "/1.0/profiles/default", timeout=5)["metadata"].get("devices") or {}
            if not any(d.get("type") == "disk" and d.get("path") == "/" for d in devices.values()):
                problem = "LXD is not initialised: the default profile has no root disk"
                fix = "initialise it: lxd init --auto (here: the preseed in scripts/setup-engines.sh)"
        return EngineStatus("lxd", installed, True, True, version=version, endpoint=endpoint, problem=problem, fix=fix)

    @classmethod
    def _probe_remote(cls, remote: _Remote, installed: bool) -> EngineStatus:
        try:
            backend = cls()
            info = backend.client.host_info
        except CmanError as err:
            problem = err.problem if isinstance(err, EngineUnavailable) else err.message
            return EngineStatus("lxd", installed, False, False, endpoint=remote.endpoint, problem=problem,
                                fix=err.hint or f"check that LXD listens at {remote.endpoint} (core.https_address)")
        version = str((info.get("environment") or {}).get("server_version") or "")
        return EngineStatus("lxd", installed, True, True, version=version, endpoint=remote.endpoint)

    @classmethod
    def reachable(cls) -> bool:
        return _reach.reachable("lxd")

    @classmethod
    def validate_name(cls, name: str) -> None:
        check_name(name, NAME_RE, 63, NAME_RULES)

    # -- low-level calls (raise engine exceptions; callers wrap them in _boundary) ----------

    def _wait_op(self, operation: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for a background operation; its final metadata, or OperationFailed."""
        op_id = operation.rstrip("/").split("/")[-1].split("?")[0]
        params = {"timeout": str(int(timeout))} if timeout is not None else None
        body = self.client.api.operations[op_id].wait.get(params=params).json()
        meta = body.get("metadata") or {}
        if body.get("error") and not meta:
            raise OperationFailed(str(body["error"]))
        if meta.get("status") == "Failure" or int(meta.get("status_code") or 200) >= 400:
            raise OperationFailed(str(meta.get("err") or meta.get("status") or "operation failed"), meta)
        return dict(meta)

    def _sync_or_wait(self, response: Any) -> dict[str, Any]:
        body = response.json()
        if body.get("type") == "async" and body.get("operation"):
            return self._wait_op(body["operation"])
        return dict(body.get("metadata") or {})

    def _raw(self, ref: str) -> dict[str, Any]:
        """GET /1.0/instances/NAME with its state (recursion=1)."""
        if not NAME_RE.fullmatch(ref) or len(ref) > 63:
            raise ContainerNotFound(ref, "lxd")
        data: dict[str, Any] = self.client.api.instances[ref].get(params={"recursion": "1"}).json()["metadata"]
        return data

    def _while_busy(self, call: Callable[[], _T]) -> _T:
        """LXD refuses a state change or a delete while its own start/stop of the instance
        still runs ("Instance is busy running a "stop" operation") - e.g. just after a job
        powered its container off, which LXD already reports as Stopped. Wait for it."""
        deadline = time.monotonic() + BUSY_WAIT
        while True:
            try:
                return call()
            except Exception as err:
                if classify_message(_api_text(err)) != "busy" or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _set_state(self, ref: str, action: str, *, timeout: float = -1, force: bool = False) -> None:
        body = {"action": action, "timeout": int(timeout), "force": force}
        self._while_busy(lambda: self._sync_or_wait(self.client.api.instances[ref].state.put(json=body)))

    def _delete(self, ref: str) -> None:
        self._while_busy(lambda: self._sync_or_wait(self.client.api.instances[ref].delete()))

    def _file(self, ref: str, path: str) -> bytes | None:
        """A file of the container (running or stopped); None when it does not exist."""
        from pylxd import exceptions as lxd_exc

        try:
            response = self.client.api.instances[ref].files.get(params={"path": path}, is_api=False)
        except lxd_exc.NotFound:
            return None
        content: bytes = response.content
        return content

    def _put_file(self, ref: str, path: str, data: bytes, mode: str = "0644") -> None:
        headers = {
            "X-LXD-type": "file", "X-LXD-mode": mode, "X-LXD-uid": "0", "X-LXD-gid": "0", "X-LXD-write": "overwrite",
        }
        self.client.api.instances[ref].files.post(params={"path": path}, data=data, headers=headers)

    def _mkdir(self, ref: str, path: str) -> None:
        from pylxd import exceptions as lxd_exc

        headers = {"X-LXD-type": "directory", "X-LXD-mode": "0755", "X-LXD-uid": "0", "X-LXD-gid": "0"}
        with contextlib.suppress(lxd_exc.LXDAPIException):  # exists already
            self.client.api.instances[ref].files.post(params={"path": path}, data=b"", headers=headers)

    # -- images -----------------------------------------------------------------------

    def _image_raw(self, ref: str) -> dict[str, Any]:
        """Resolve a reference to a local image (see :mod:`._lxd_image` for the order)."""
        from pylxd import exceptions as lxd_exc

        from . import _lxd_image

        api = self.client.api.images
        candidates = [ref]
        expanded = _lxd_image.expand(ref)
        if expanded != ref:
            candidates.append(expanded)
        for name in candidates:
            if not name or name.startswith("-"):
                continue
            try:
                target = api.aliases[quote(name, safe="")].get().json()["metadata"]["target"]
                data: dict[str, Any] = api[target].get().json()["metadata"]
                return data
            except lxd_exc.NotFound:
                pass
        if _lxd_image.looks_like_fingerprint(ref):
            try:
                data = api[ref].get().json()["metadata"]
                return data
            except lxd_exc.NotFound:
                pass
        raise ImageNotFound(ref, "lxd")

    def pull(self, ref: str) -> Iterator[PullProgress]:
        """``REMOTE:ALIAS`` / ``https://HOST[:PORT][/PATH]:ALIAS`` / a short name of the image map.

        The daemon downloads; cman sends nothing to the image server itself. Progress
        comes from the operation's ``download_progress``, polled.
        """
        from . import _lxd_image

        target = _lxd_image.expand(ref)
        remote = _lxd_image.parse_remote(target)
        if remote is None:
            raise ImageNotFound(
                ref, "lxd",
                "not a remote reference: write REMOTE:ALIAS (remotes: "
                + ", ".join(_lxd_image.remotes()) + ") or https://HOST[:PORT]:ALIAS",
            )
        body = {
            "source": {
                "type": "image",
                "mode": "pull",
                "server": remote.server,
                "protocol": remote.protocol,
                "alias": remote.alias,
            },
            "aliases": [{"name": remote.canonical, "description": f"cman pull {ref}"}],
            "auto_update": False,
        }
        with _boundary(image=ref, action="pull"):
            operation = str(self.client.api.images.post(json=body).json()["operation"])
        last: str | None = None
        announced = False
        while True:
            with _boundary(image=ref, action="pull"):
                try:
                    meta = self._wait_op(operation, timeout=1)
                except OperationFailed as err:
                    raise self._pull_failed(ref, remote, err.message) from err
            if not announced:  # only once the server answered: a failed pull prints one line
                announced = True
                yield PullProgress(None, f"Pulling {remote.alias} from {remote.server}")
            details = meta.get("metadata") or {}
            if meta.get("status") == "Success":
                fingerprint = str(details.get("fingerprint") or "")
                yield PullProgress(None, f"Pulled {remote.canonical} ({fingerprint[:12]})")
                return
            progress = str(details.get("download_progress") or "")
            if progress and progress != last:
                last = progress
                yield _progress_event(progress)

    def _pull_failed(self, ref: str, remote: _lxd_image.RemoteRef, text: str) -> CmanError:
        low = text.lower()
        if "not found" in low and "alias" in low:
            return ImageNotFound(ref, "lxd", f"{remote.alias} is not on {remote.server}")
        proxy = ""
        with contextlib.suppress(Exception):
            proxy = str(self.client.host_info.get("config", {}).get("core.proxy_https") or "")
        via = f" through the proxy {proxy}" if proxy else ""
        return EngineUnavailable(
            "lxd",
            f"the image server {remote.server} cannot be reached{via}: {text}",
            "make the image locally (cman --backend lxd image import TARBALL NAME) "
            "or pull from a server you can reach (https://HOST[:PORT]:ALIAS)",
        )

    @idempotent(_is_transient)
    def images(self) -> list[Image]:
        with _boundary(action="list images"):
            raw = self.client.api.images.get(params={"recursion": "1"}).json()["metadata"]
        return [_image_from_raw(r) for r in raw]

    @idempotent(_is_transient)
    def image_inspect(self, ref: str) -> Image:
        with _boundary(image=ref):
            return _image_from_raw(self._image_raw(ref))

    @idempotent(_is_transient)
    def image_history(self, ref: str) -> list[ImageLayer]:
        """LXD images have no layers: one entry, the image itself."""
        with _boundary(image=ref):
            raw = self._image_raw(ref)
        props = raw.get("properties") or {}
        source = raw.get("update_source") or {}
        created_by = str(props.get("description") or "")
        if source.get("server"):
            created_by = f"pulled from {source.get('server')}:{source.get('alias', '')}"
        return [
            ImageLayer(
                id=str(raw["fingerprint"]),
                created=_parse_time(raw.get("created_at")) or _parse_time(raw.get("uploaded_at")),
                created_by=created_by,
                size=raw.get("size"),
                comment=f"uploaded {raw.get('uploaded_at', '')}".strip(),
            )
        ]

    def _image_users(self, fingerprint: str) -> list[str]:
        raw = self.client.api.instances.get(params={"recursion": "1"}).json()["metadata"]
        return sorted(
            str(r["name"]) for r in raw if (r.get("config") or {}).get("volatile.base_image") == fingerprint
        )

    def image_remove(self, ref: str, *, force: bool = False) -> None:
        """Remove an image; with several aliases, removing by alias drops just that alias (like ``docker rmi TAG``)."""
        with _boundary(image=ref, action="remove image"):
            raw = self._image_raw(ref)
            fingerprint = str(raw["fingerprint"])
            aliases = [str(a["name"]) for a in raw.get("aliases") or []]
            if ref in aliases and len(aliases) > 1:
                self.client.api.images.aliases[quote(ref, safe="")].delete()
                return
            if not force:
                users = self._image_users(fingerprint)
                if users:
                    raise InUse(
                        f"image {ref} is in use by container(s) {', '.join(users)}",
                        hint="remove them first, or use --force",
                    )
            self._sync_or_wait(self.client.api.images[fingerprint].delete())

    def image_prune(self) -> PruneResult:
        """Remove images that have no alias and that no container was made from."""
        removed: list[str] = []
        reclaimed = 0
        with _boundary(action="prune images"):
            images = self.client.api.images.get(params={"recursion": "1"}).json()["metadata"]
            instances = self.client.api.instances.get(params={"recursion": "1"}).json()["metadata"]
            used = {(r.get("config") or {}).get("volatile.base_image") for r in instances}
            for raw in images:
                fingerprint = str(raw["fingerprint"])
                if raw.get("aliases") or fingerprint in used:
                    continue
                self._sync_or_wait(self.client.api.images[fingerprint].delete())
                removed.append(fingerprint)
                reclaimed += int(raw.get("size") or 0)
        return PruneResult(removed=tuple(removed), reclaimed_bytes=reclaimed)

    def image_import(self, tarball: Path, name: str) -> Image:
        """Build a unified LXD image (``metadata.yaml`` + ``rootfs/``) from a rootfs tarball and
        import it with the alias NAME. Re-importing the same tarball reuses the image (the
        build is deterministic); an alias already in use moves to the new image."""
        from . import _lxd_image

        _lxd_image.check_alias(name)
        if _lxd_image.parse_remote(name) is not None:
            raise InvalidValue("NAME", name, "looks like a remote reference (REMOTE:ALIAS); choose a plain name")
        if not tarball.is_file():
            raise InvalidValue("TARBALL", str(tarball), "no such file")
        built = _lxd_image.build_unified(tarball, name)
        try:
            with _boundary(image=name, action="import"):
                self._upload_and_alias(built, name)
                return _image_from_raw(self._image_raw(name))
        finally:
            built.path.unlink(missing_ok=True)

    def _upload_and_alias(self, built: _lxd_image.BuiltImage, name: str) -> None:
        from pylxd import exceptions as lxd_exc

        api = self.client.api.images
        try:
            api[built.fingerprint].get()
        except lxd_exc.NotFound:
            with open(built.path, "rb") as data:
                response = api.post(data=data, headers={"Content-Type": "application/octet-stream"})
            meta = self._sync_or_wait(response)
            fingerprint = str((meta.get("metadata") or {}).get("fingerprint") or built.fingerprint)
            if fingerprint != built.fingerprint:
                raise EngineError(f"lxd import: stored as {fingerprint}, expected {built.fingerprint}") from None
        alias = quote(name, safe="")
        try:
            current = api.aliases[alias].get().json()["metadata"]
        except lxd_exc.NotFound:
            api.aliases.post(json={"name": name, "target": built.fingerprint, "description": "cman image import"})
            return
        if current.get("target") != built.fingerprint:
            api.aliases[alias].put(json={"target": built.fingerprint, "description": "cman image import"})

    # -- containers ---------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> Container:
        import secrets

        from pylxd import exceptions as lxd_exc

        from ..network import container_dns, render_resolv_conf

        name = spec.name or f"cman-{secrets.token_hex(4)}"
        self.validate_name(name)
        config: dict[str, str] = {
            CFG_MANAGED: "true",
            CFG_COMMAND: json.dumps(list(spec.command)),
            CFG_IMAGE: spec.image,
            CFG_TTY: "true" if spec.tty else "false",
            CFG_INTERACTIVE: "true" if spec.interactive else "false",
        }
        for key, value in spec.env.items():
            config[CFG_ENV + key] = value
        for key, value in spec.labels.items():
            config[CFG_LABEL + key] = value
        if spec.cpus is not None:
            config["limits.cpu.allowance"] = cpu_allowance(spec.cpus)
        if spec.memory is not None:
            config["limits.memory"] = str(spec.memory)
        devices: dict[str, dict[str, str]] = {}
        net = self._network_for(spec)
        if spec.network in _lxd_net.RESERVED_NAMES:
            devices[_lxd_net.NIC] = {"type": "none"}  # loopback only: masks the profile's NIC
        servers, search = container_dns(net, spec.dns, spec.dns_search)
        with _boundary(container=name, image=spec.image, action="create"):
            fingerprint = str(self._image_raw(spec.image)["fingerprint"])
            try:
                self.client.api.instances[name].get()
                raise NameInUse(name, "lxd")
            except lxd_exc.NotFound:
                pass
            body: dict[str, Any] = {
                "name": name,
                "type": "container",
                "source": {"type": "image", "fingerprint": fingerprint},
                "config": config,
                "devices": devices,
                "ephemeral": spec.auto_remove,
            }
            if net is None:
                self._sync_or_wait(self.client.api.instances.post(json=body))
            else:
                net = self._create_on_network(body, net, spec.ip)
            try:
                raw = self._raw(name)
                if net is not None:
                    self._pin_address(name, raw, net)
                if servers or search:
                    self._put_file(name, "/etc/resolv.conf", render_resolv_conf(servers, search).encode())
                return _container_from_raw(self._raw(name) if net is not None else raw)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._delete(name)
                raise

    # -- containers on networks (see _lxd_net) ----------------------------------------------

    def _network_for(self, spec: ContainerSpec) -> Network | None:
        """The network a new container joins, checked against ``--ip``; None without one."""
        from ..network import check_container_ip

        if spec.network is None or spec.network in _lxd_net.RESERVED_NAMES:
            if spec.ip is not None:
                raise InvalidValue("--ip", spec.ip, "needs --network NAME (a network with a subnet)")
            return None
        net = self._network(spec.network)
        if not net.subnet:
            raise InvalidValue("--network", spec.network, "has no IPv4 subnet for cman to give addresses from")
        if spec.ip is not None:
            check_container_ip(net, spec.ip)
        if not net.icc:
            self.require(Feature.NO_ICC, f"network {net.name} has no ICC")
        return net

    def _create_on_network(self, body: dict[str, Any], net: Network, requested: str | None) -> Network:
        """Allocate the container's address and create it, under the host's network lock,
        so that no two cman processes hand out one address. Returns the network as it was then."""
        from ..network import check_container_ip, host_lock
        from ..network.alloc import allocate

        with host_lock():
            fresh = self._network(net.name)  # it may have gone (or changed) meanwhile
            if requested is not None:
                check_container_ip(fresh, requested)
            instances = self.client.api.instances.get(params={"recursion": "2"}).json()["metadata"]
            taken = _lxd_net.holders(instances, fresh.name, str(fresh.subnet))
            address = allocate(fresh.name, str(fresh.subnet), fresh.gateway, taken, requested)
            body["devices"][_lxd_net.NIC] = _lxd_net.nic_device(fresh)
            body["config"][_lxd_net.CFG_NETWORK] = fresh.name
            body["config"][_lxd_net.CFG_IP] = address
            self._sync_or_wait(self.client.api.instances.post(json=body))
        return fresh

    def _pin_address(self, ref: str, raw: Mapping[str, Any], net: Network) -> None:
        """Make the allocated address and the default route static: ``raw.lxc`` lines that
        LXC applies before init on every start (also a start outside cman)."""
        config = raw.get("config") or {}
        expanded = raw.get("expanded_config") or {}
        index = _lxd_net.nic_index(raw.get("expanded_devices") or {}, _lxd_net.NIC)
        block = _lxd_net.raw_lxc_block(net.name, index, str(config[_lxd_net.CFG_IP]), str(net.subnet), net.gateway)
        base = str(config.get(_lxd_net.RAW_LXC) or expanded.get(_lxd_net.RAW_LXC) or "")
        patch = {"config": {_lxd_net.RAW_LXC: _lxd_net.with_block(base, block)}}
        self._sync_or_wait(self.client.api.instances[ref].patch(json=patch))

    def _network_up(self, ref: str, raw: Mapping[str, Any]) -> None:
        """After a (re)start, before the job: the container has its address and default
        route, the bridge's host rule is in place, and on a no-ICC network its bridge port
        is isolated. If that cannot be done the container is stopped: it must not run with
        less than its network promises."""
        att = _lxd_net.attachment(raw)
        if att is None or att.ip is None:
            return
        try:
            net = self._network(att.network)
            self._ensure_address(ref, raw, att, net)
            if self.locality().local:
                self._bridge_rules(net)
        except CmanError as err:
            with contextlib.suppress(CmanError):
                self.kill(ref)
            raise EngineError(
                f"lxd: {ref} was stopped: cannot set up its network {att.network} ({err})",
                hint="cman needs root and iproute2 (`ip`, `bridge`) on the host, and `ip` in the image",
            ) from err
        if self.locality().local and not net.icc and net.bridge:
            from ..network import isolation

            port = str((raw.get("config") or {}).get(f"volatile.{att.device}.host_name") or "") or None
            pid = (raw.get("state") or {}).get("pid")
            isolation.enforce("lxd", ref, int(pid) if pid else None, [isolation.Port(net.name, net.bridge, port)],
                              stop=lambda: self.kill(ref))

    def _ensure_address(self, ref: str, raw: Mapping[str, Any], att: _lxd_net.Attachment, net: Network) -> None:
        """raw.lxc gave the address at start; if it is missing (raw.lxc edited, another NIC
        index), set address and default route from outside, with ``ip`` in the container."""
        import ipaddress

        if att.ip is None or att.ip in _lxd_net.live_addresses(raw, att.iface) or not net.subnet:
            return
        subnet = ipaddress.IPv4Network(net.subnet)
        steps = [
            ["ip", "link", "set", "dev", att.iface, "up"],
            ["ip", "addr", "replace", f"{att.ip}/{subnet.prefixlen}", "brd", str(subnet.broadcast_address),
             "dev", att.iface],
        ]
        if net.gateway:
            steps.append(["ip", "route", "replace", "default", "via", net.gateway, "dev", att.iface])
        for argv in steps:
            code, err = self._exec_quiet(ref, argv)
            if code != 0:
                raise EngineError(f"`{' '.join(argv)}` in {ref} failed ({code}): {err or 'no message'}")

    def _exec_quiet(self, ref: str, argv: Sequence[str]) -> tuple[int, str]:
        import io as _io

        out, err = _io.BytesIO(), _io.BytesIO()
        code = self._exec(ref, argv, StdIO(None, out, err), env=None)
        return code, err.getvalue().decode(errors="replace").strip()

    def _bridge_rules(self, net: Network) -> None:
        """The bridge's forwarding rule on this host (gone after a reboot or a flush)."""
        from ..network import host_lock, netfilter

        if net.bridge and net.managed and not netfilter.list_rules(net.name, net.bridge):
            with host_lock():
                netfilter.ensure_bridge_rules(net.name, net.bridge, icc=net.icc)

    def _boot(self, ref: str) -> bool:
        """Start the container unless it runs; True when this call booted it."""
        raw = self._raw(ref)
        if _state_of(raw) == State.RUNNING:
            return False
        if _state_of(raw) == State.PAUSED:
            self._set_state(ref, "unfreeze")
            return False
        self._set_state(ref, "start")
        return True

    def start(self, ref: str) -> None:
        """Boot the container, set up its network, and launch its job (see :mod:`cman.jobs`)."""
        with _boundary(container=ref, action="start"):
            booted = self._boot(ref)
            raw = self._raw(ref) if booted else None
            if raw is not None:
                self._network_up(ref, raw)
        command = _command_of(raw.get("config") or {}) if raw is not None else ()
        if command:
            jobs.launch(self, ref, command)

    def start_attached(self, ref: str, io: StdIO) -> int:
        """Boot, then run the job in the foreground (see :func:`cman.jobs.run_foreground`)."""
        with _boundary(container=ref, action="start"):
            booted = self._boot(ref)
            raw = self._raw(ref)
            if booted:
                self._network_up(ref, raw)
            command = _command_of(raw.get("config") or {})
        if not command:
            if io.stdin is None:
                return 0  # a plain system container: booted, left running
            command = DEFAULT_SHELL
        return jobs.run_foreground(self, ref, command, io)

    # -- what the job runner needs (cman.jobs.JobHost) ----------------------------------------

    def job_state(self, ref: str) -> State | None:
        from pylxd import exceptions as lxd_exc

        with _boundary(container=ref):
            try:
                return _state_of(self._raw(ref))
            except lxd_exc.NotFound:
                return None

    def read_file(self, ref: str, path: str) -> bytes | None:
        with _boundary(container=ref, action=f"read {path}"):
            return self._file(ref, path)

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        from pylxd import exceptions as lxd_exc

        with _boundary(container=ref, action=f"write {path}"):
            try:
                self._put_file(ref, path, data)
            except lxd_exc.LXDAPIException:  # a folder on the way is missing: make them, once
                parts = path.strip("/").split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    self._mkdir(ref, "/" + "/".join(parts[:i]))
                self._put_file(ref, path, data)

    def exec_attached(self, ref: str, command: Sequence[str], io: StdIO) -> int:
        return self._exec(ref, command, io, env=None)

    def exec_detached(self, ref: str, argv: Sequence[str]) -> None:
        body = {
            "command": list(argv),
            "environment": {},
            "wait-for-websocket": False,
            "interactive": False,
            "record-output": False,
        }
        with _boundary(container=ref, action="start the job"):
            self.client.api.instances[ref].exec.post(json=body)

    def halt_signal(self, ref: str) -> int:
        return jobs.DEFAULT_HALT

    def kill(self, ref: str) -> None:
        with contextlib.suppress(ContainerNotFound), _boundary(container=ref, action="stop"):
            self._set_state(ref, "stop", force=True)

    @idempotent(_is_transient)
    def stop(self, ref: str, *, timeout: float = 10) -> None:
        """LXD's clean shutdown (SIGPWR to init), up to ``timeout`` seconds, then kill."""
        with _boundary(container=ref, action="stop"):
            if _state_of(self._raw(ref)) not in (State.RUNNING, State.PAUSED):
                return
            if timeout > 0:
                try:
                    self._set_state(ref, "stop", timeout=max(1, math.ceil(timeout)))
                    return
                except OperationFailed:
                    pass
                except Exception as err:
                    from pylxd import exceptions as lxd_exc

                    if isinstance(err, lxd_exc.NotFound):  # an ephemeral container is gone once stopped
                        return
                    if not isinstance(err, lxd_exc.LXDAPIException):
                        raise
            try:
                self._set_state(ref, "stop", force=True)
            except OperationFailed as err:
                if "already stopped" not in err.message.lower():
                    raise

    def restart(self, ref: str, *, timeout: float = 10) -> None:
        """Stop (clean, then kill after ``timeout``) and start again; the job runs again.

        LXD's own restart action is used, so an ephemeral (``--rm -d``) container survives it.
        """
        with _boundary(container=ref, action="restart"):
            if _state_of(self._raw(ref)) not in (State.RUNNING, State.PAUSED):
                self._boot(ref)
            else:
                try:
                    self._set_state(ref, "restart", timeout=max(1, math.ceil(timeout)) if timeout > 0 else -1,
                                    force=timeout <= 0)
                except OperationFailed:
                    self._set_state(ref, "restart", force=True)
            raw = self._raw(ref)
            self._network_up(ref, raw)  # a new veth: address checked, port isolated again
        command = _command_of(raw.get("config") or {})
        if command:
            jobs.launch(self, ref, command)

    def remove(self, ref: str, *, force: bool = False) -> None:
        with _boundary(container=ref, action="remove"):
            raw = self._raw(ref)
            if _state_of(raw) in (State.RUNNING, State.PAUSED):
                if not force:
                    raise Conflict(f"container {ref} is running", hint=f"stop it first (cman stop lxd:{ref}) or use -f")
                self._set_state(ref, "stop", force=True)
                if raw.get("ephemeral"):
                    self._wait_gone(ref)
                    return
            self._delete(ref)

    def _wait_gone(self, ref: str, limit: float = 10.0) -> None:
        """An ephemeral container is deleted by LXD right after it stops."""
        from pylxd import exceptions as lxd_exc

        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                self.client.api.instances[ref].get()
            except lxd_exc.NotFound:
                return
            time.sleep(0.05)
        self._delete(ref)

    @idempotent(_is_transient)
    def containers(self, *, all: bool = False) -> list[Container]:  # noqa: A002
        path = self._socket
        if path is not None:
            # The hot path of `cman ps`: stdlib HTTP over the socket, no pylxd/requests import.
            try:
                raw = _http.get_json(path, "/1.0/instances", {"recursion": "2"})["metadata"]
            except (FileNotFoundError, PermissionError) as err:
                raise _unavailable(err) from err
            except _http.HTTPStatusError as err:
                raise _translate(err, container=None, image=None, action="list containers") from err
            except OSError as err:
                raise EngineUnavailable("lxd", f"cannot talk to the daemon at {path}: {err}",
                                        _fix_for_missing_daemon()) from err
        else:
            with _boundary(action="list containers"):
                raw = self.client.api.instances.get(params={"recursion": "2"}).json()["metadata"]
        items = [_container_from_raw(r) for r in raw]
        return [c for c in items if all or c.state in (State.RUNNING, State.PAUSED)]

    @idempotent(_is_transient)
    def inspect(self, ref: str) -> Container:
        with _boundary(container=ref):
            raw = self._raw(ref)
            exit_code = None
            if _state_of(raw) == State.STOPPED:
                exit_code = self._exit_code(ref, raw)
            return _container_from_raw(raw, exit_code)

    def _exit_code(self, ref: str, raw: Mapping[str, Any]) -> int | None:
        """The job's recorded exit code; None for a container without a job."""
        if not _command_of(raw.get("config") or {}):
            return None
        return jobs.exit_code(self, ref)

    def exec(
        self,
        ref: str,
        command: Sequence[str],
        io: StdIO,
        *,
        env: dict[str, str] | None = None,
    ) -> int:
        with _boundary(container=ref, action="exec"):
            if _state_of(self._raw(ref)) != State.RUNNING:
                raise Conflict(f"container {ref} is not running", hint=f"start it first: cman start lxd:{ref}")
        return self._exec(ref, command, io, env=env)

    def _exec(
        self,
        ref: str,
        command: Sequence[str],
        io: StdIO,
        *,
        env: dict[str, str] | None,
    ) -> int:
        from . import _lxd_ws

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
            channels = _lxd_ws.connect_channels(dial, host, urlparse(operation).path, fds, pty=io.tty)
        try:
            produced = _lxd_ws.pump(channels, io, pty=io.tty)
        except Interrupted as err:
            with contextlib.suppress(OSError):
                _lxd_ws.send_signal(channels.control, int(getattr(signal.Signals, err.signame, signal.SIGINT)))
            raise
        finally:
            channels.close()
        with _boundary(container=ref, action="exec"):
            try:
                meta: Mapping[str, Any] = self._wait_op(operation)
            except OperationFailed as err:
                # LXD marks every exec that returns 126/127 as failed ("Command not found"),
                # whether or not the command existed: the code is the truth, not the text.
                if (err.operation.get("metadata") or {}).get("return") is None:
                    raise
                meta = err.operation
        code = (meta.get("metadata") or {}).get("return")
        if code is None:
            raise EngineError(f"lxd: exec in {ref} finished but reported no exit code")
        if int(code) in (126, 127) and not produced and command:
            self._explain_launch_failure(ref, command[0], int(code), io)
        return int(code)

    def _explain_launch_failure(self, ref: str, program: str, code: int, io: StdIO) -> None:
        """A silent 127/126 may be a command that exited so, or one that could not start:
        ask the container which, and say so on stderr (as ``docker run`` does)."""
        import io as _io

        check = 'command -v "$1" >/dev/null 2>&1' if code == 127 else '[ -f "$1" ] && [ -x "$1" ]'
        probe_io = StdIO(None, _io.BytesIO(), _io.BytesIO())
        with contextlib.suppress(CmanError, OSError):
            if self._exec(ref, ["/bin/sh", "-c", check, "sh", program], probe_io, env=None) != 0:
                why = "command not found" if code == 127 else "permission denied (not an executable file)"
                io.stderr.write(f"cman: {program}: {why} in lxd:{ref}\n".encode())
                io.stderr.flush()

    def logs(self, ref: str, *, follow: bool = False) -> Iterator[LogChunk]:
        with _boundary(container=ref, action="logs"):
            raw = self._raw(ref)
        if not _command_of(raw.get("config") or {}):
            yield from self._console_log(ref, follow=follow)
            return
        yield from jobs.logs(self, ref, follow=follow)

    def _console_log(self, ref: str, *, follow: bool) -> Iterator[LogChunk]:
        """The console log: LXD serves it for a stopped container (for a running one, 5.0 fails)."""
        from pylxd import exceptions as lxd_exc

        while True:
            with _boundary(container=ref, action="logs"):
                running = _state_of(self._raw(ref)) == State.RUNNING
                if not running:
                    try:
                        data = self.client.api.instances[ref].console.get(is_api=False).content
                    except lxd_exc.LXDAPIException:
                        data = b""
                    if data:
                        yield LogChunk("stdout", data)
                    return
            if not follow:
                return
            time.sleep(LOG_POLL)

    def wait(self, ref: str) -> int:
        """Block until the container stops (its job ended, or someone stopped it); the job's
        exit code (0 for a container without a job)."""
        with _boundary(container=ref, action="wait"):
            raw = self._raw(ref)
        if not _command_of(raw.get("config") or {}):
            while self.job_state(ref) not in (None, State.STOPPED, State.DEAD):
                time.sleep(POLL)
            return 0
        return jobs.wait(self, ref)

    @idempotent(_is_transient)
    def init_pid(self, ref: str) -> int | None:
        with _boundary(container=ref):
            raw = self._raw(ref)
        pid = (raw.get("state") or {}).get("pid")
        return int(pid) if pid and _state_of(raw) in (State.RUNNING, State.PAUSED) else None

    # -- networks (see _lxd_net) ---------------------------------------------------------------

    @classmethod
    def validate_network_spec(cls, spec: NetworkSpec) -> None:
        """An LXD network is named like its bridge: the name must be an interface name."""
        from ..network import check_ifname

        if spec.name in _lxd_net.RESERVED_NAMES:
            raise InvalidName(f"invalid network name {spec.name!r}",
                              hint="`--network none` means loopback only; choose another name")
        try:
            check_ifname(spec.name, "network name")
        except InvalidValue as err:
            raise InvalidName(err.message, hint="on LXD a network is named like its bridge interface") from None
        if spec.bridge is not None and spec.bridge != spec.name:
            raise InvalidValue("--bridge", spec.bridge,
                               f"an LXD network's bridge is named after the network: leave --bridge out or give {spec.name}")

    @classmethod
    def default_bridge_name(cls, network: str) -> str:
        return network

    def _network_raw(self, name: str) -> dict[str, Any]:
        """GET /1.0/networks/NAME of a managed bridge; NetworkNotFound for anything else
        (LXD also answers for every host interface, unmanaged)."""
        from pylxd import exceptions as lxd_exc

        from ..network import NAME_RE as NETWORK_NAME_RE

        if not NETWORK_NAME_RE.fullmatch(name or ""):
            raise NetworkNotFound(name, "lxd")
        with _boundary(action="network inspect"):
            try:
                raw: dict[str, Any] = self.client.api.networks[quote(name, safe="")].get().json()["metadata"]
            except lxd_exc.NotFound:
                raise NetworkNotFound(name, "lxd") from None
        if not _lxd_net.is_bridge(raw):
            raise NetworkNotFound(name, "lxd")
        return raw

    def _network(self, name: str, *, detail: bool = False) -> Network:
        """The network; with ``detail`` also the host rules and isolated ports cman made for it."""
        raw = self._network_raw(name)
        extra: dict[str, Any] = {}
        if detail and self.locality().local:
            from ..network import isolation, netfilter

            extra = {
                "host_rules": [str(r) for r in netfilter.list_rules(str(raw["name"]))],
                "isolated_ports": sorted(p for p, iso in isolation.bridge_ports(str(raw["name"])).items() if iso),
            }
        return _lxd_net.to_network(raw, extra)

    def network_create(self, spec: NetworkSpec) -> Network:
        """A managed LXD bridge (see :mod:`._lxd_net`), then the host rule; on failure both go."""
        from ..network import netfilter

        if not spec.resolved or spec.bridge is None:
            raise ValueError(f"network_create needs a resolved spec, got {spec}")
        self.validate_network_spec(spec)
        local = self.locality().local
        if not spec.icc:
            self.require(Feature.NO_ICC)
        body = {"name": spec.name, "type": "bridge", "description": "made by cman",
                "config": _lxd_net.network_config(spec)}
        with _boundary(action=f"network create {spec.name}"):
            self._sync_or_wait(self.client.api.networks.post(json=body))
        try:
            if local:
                netfilter.ensure_bridge_rules(spec.name, spec.bridge, icc=spec.icc)
            return self._network(spec.name, detail=True)
        except BaseException:
            if local:
                with contextlib.suppress(CmanError):
                    netfilter.remove_rules(spec.name, spec.bridge)
            with contextlib.suppress(Exception), _boundary(action=f"network rm {spec.name}"):
                self._sync_or_wait(self.client.api.networks[quote(spec.name, safe="")].delete())
            raise

    @idempotent(_is_transient)
    def networks(self) -> list[Network]:
        """LXD's managed bridges (cman's and others such as lxdbr0)."""
        with _boundary(action="list networks"):
            raw = self.client.api.networks.get(params={"recursion": "1"}).json()["metadata"]
        return sorted((_lxd_net.to_network(r) for r in raw if _lxd_net.is_bridge(r)), key=lambda n: n.name)

    @idempotent(_is_transient)
    def network_inspect(self, name: str) -> Network:
        return self._network(name, detail=True)

    def network_remove(self, name: str, *, force: bool = False) -> None:
        """Refused while containers are on it, unless ``force``: each then keeps everything
        but this network (its NIC becomes a ``none`` device, see :func:`._lxd_net.detached`).
        Then the LXD network (bridge, route, its firewall rules) and cman's host rules go."""
        from pylxd import exceptions as lxd_exc

        from ..network import netfilter

        raw = self._network_raw(name)
        net = _lxd_net.to_network(raw)
        if net.containers and not force:
            raise InUse(
                f"network {name} is in use by container(s) {', '.join(net.containers)}",
                hint=f"remove them first, or `cman network rm -f lxd:{name}` to disconnect them",
            )
        profiles = _lxd_net.profile_users(raw)
        if profiles:
            raise InUse(f"network {name} is in use by LXD profile(s) {', '.join(profiles)}",
                        hint="take it out of the profile first: lxc profile device remove PROFILE DEVICE")
        for container in net.containers:
            self._detach(container, name)
        with _boundary(action=f"network rm {name}"):
            try:
                self._while_busy(lambda: self._sync_or_wait(self.client.api.networks[quote(name, safe="")].delete()))
            except lxd_exc.NotFound:
                raise NetworkNotFound(name, "lxd") from None
        if net.managed and self.locality().local:
            netfilter.remove_rules(name, net.bridge)

    def _detach(self, container: str, network: str) -> None:
        """Take a container (running or not) off ``network``; it is kept."""
        from pylxd import exceptions as lxd_exc

        with _boundary(container=container, action=f"disconnect from network {network}"):
            try:
                raw = self.client.api.instances[container].get().json()["metadata"]
            except lxd_exc.NotFound:
                return  # gone meanwhile (an ephemeral container that stopped)
            body = _lxd_net.detached(raw, network)
            self._while_busy(lambda: self._sync_or_wait(self.client.api.instances[container].put(json=body)))


def _progress_event(text: str) -> PullProgress:
    """``"rootfs: 23% (1.20MB/s)"`` -> layer "rootfs", status "Downloading 23% (1.20MB/s)"."""
    layer, sep, rest = text.partition(":")
    if not sep:
        return PullProgress(None, text)
    return PullProgress(layer.strip(), f"Downloading {rest.strip()}")
