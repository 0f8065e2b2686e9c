"""The LXD connection: the pylxd client, the error boundary, and the low-level calls.

pylxd (and ``requests``) are imported on first use, never at import time. Errors from
pylxd, requests and LXD's operations are translated into cman's family in
:func:`_boundary` and nowhere else; daemon messages that carry no status code of their
own are classified by one table, :data:`API_MESSAGES`. The low-level calls of
:class:`LxdConnection` raise the engine's exceptions: their callers wrap them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..._sys import unixhttp as _http
from ...errors import (
    CmanError,
    Conflict,
    ContainerNotFound,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    ImageNotFound,
    NameInUse,
)
from ...validate import check_name
from .. import setting
from ..base import Backend, Feature, Locality, loopback_url
from . import endpoint
from .endpoint import ENV_CERT, ENV_ENDPOINT, ENV_VERIFY, _Remote

if TYPE_CHECKING:
    import pylxd

    from ...models import EngineStatus

_T = TypeVar("_T")

NAME_RE = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
NAME_RULES = (
    "LXD names are 1-63 characters of letters, digits and '-', starting with a letter and not ending with '-'"
)
CLIENT_TIMEOUT = 120.0
"""pylxd's timeout for a request (connect, and each wait for an answer); never for a whole operation."""
WAIT_STEP = 30
"""Seconds one ``GET /1.0/operations/ID/wait?timeout=N`` may block in the daemon: a long operation
(``stop -t 300``, a large import) is waited for in steps, each its own request with its own
timeout, so the client's timeout never caps the operation."""
WAIT_MARGIN = 30.0
"""How much longer than its step a wait request may take before it counts as unanswered."""
BUSY_WAIT = 15.0
"""How long to wait for LXD's own start/stop of an instance to finish before giving up."""

# LXD reports these conditions only as text (often inside a failed operation, where the
# HTTP status is 200): one table, tested in tests/unit/test_lxd_backend.py.
API_MESSAGES: tuple[tuple[str, str], ...] = (
    ("already exists", "name-in-use"),
    ('busy running a "create" operation', "name-in-use"),  # another client is creating that name
    ("image not found", "image-not-found"),
    ("image alias not found", "image-not-found"),
    ("instance not found", "container-not-found"),
    ("no root device could be found", "not-initialised"),
    ("no storage pool found", "not-initialised"),
    ("instance is running", "running"),
    ("instance is not running", "not-running"),
    ("is busy running", "busy"),
    ("not authorized", "untrusted"),
    ("lxd is shutting down", "shutting-down"),
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


def rollback_failed(err: BaseException, note: str) -> None:
    """Say in ``err`` itself that undoing a half-made thing failed too: the original message
    first, then ``; `` and ``note``, on one line (a non-cman error gets a note)."""
    if isinstance(err, CmanError):
        err.message = f"{err.message}; {note}"
        err.args = (err.message, *err.args[1:])
    else:
        err.add_note(note)


# -- the error boundary -----------------------------------------------------------------------


def _unavailable(cause: BaseException | None = None) -> EngineUnavailable:
    remote = (setting(ENV_ENDPOINT) or "").strip()
    if remote:  # a remote daemon: probing would connect again (and fail the same way)
        return EngineUnavailable(
            "lxd", f"cannot reach the LXD daemon at {remote}: {_short(cause)}",
            f"check that it listens there (lxc config set core.https_address ADDR:PORT on the server), "
            f"that {ENV_VERIFY} names its certificate, and that it trusts {ENV_CERT}",
        )
    status = endpoint.probe_local()
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
    except (FileNotFoundError, PermissionError, ConnectionError) as err:  # refused, reset, aborted
        raise _unavailable(err) from err
    except Exception as err:
        raise _translate(err, container=container, image=image, action=action) from err


def _translate(err: Exception, *, container: str | None, image: str | None, action: str) -> CmanError:
    import requests.exceptions
    from pylxd import exceptions as lxd_exc

    from .ws import WebSocketError

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
    if kind == "shutting-down":
        return EngineUnavailable("lxd", f"the daemon is shutting down ({where})", "retry once it is back up")
    if status == 403 or kind == "untrusted":
        return EngineUnavailable(
            "lxd", f"the daemon refused access: {text}",
            "trust this client's certificate on the server (lxc config trust add CERT) or use the local socket as root",
        )
    if kind == "not-initialised":
        return EngineUnavailable("lxd", f"LXD is not initialised ({text})", endpoint.FIX_INIT)
    if kind == "running" and container is not None:
        return Conflict(f"container {container} is running", hint=f"stop it first (cman stop lxd:{container})")
    if kind == "not-running" and container is not None:
        return Conflict(f"container {container} is not running", hint=f"start it first: cman start lxd:{container}")
    if status == 409:
        return Conflict(f"{where}: {text}")
    return EngineError(f"{where}: {text}")


def _connect(remote: _Remote | None) -> pylxd.Client:
    """A trusted pylxd client of the local socket, or of ``remote``."""
    import pylxd as sdk

    with _boundary(action="connect"):
        if remote is None:
            path = endpoint.lxd_socket()
            if not os.path.exists(path):
                raise _unavailable()
            client = sdk.Client(endpoint=path, timeout=CLIENT_TIMEOUT)
        else:
            client = sdk.Client(
                endpoint=remote.endpoint, cert=remote.cert, verify=remote.verify, timeout=CLIENT_TIMEOUT,
                session=endpoint.remote_session(remote),
            )
        if not client.trusted:
            raise EngineUnavailable(
                "lxd",
                f"{remote.endpoint if remote else 'the daemon'} does not trust this client"
                + (f"'s certificate {remote.cert[0]}" if remote else ""),
                "on the server: lxc config trust add CERT (locally: run as root or in the lxd group)",
            )
    return client


# -- the connection ----------------------------------------------------------------------------


class LxdConnection(Backend):
    """What every part of the LXD backend shares: the settings, the client (made on first
    use), where the daemon is, and the low-level calls."""

    def __init__(self) -> None:
        self._client: pylxd.Client | None = None
        self._remote_checked = False
        self._remote: _Remote | None = None

    @property
    def remote(self) -> _Remote | None:
        if not self._remote_checked:
            self._remote = _Remote.from_env()
            self._remote_checked = True
        return self._remote

    def locality(self) -> Locality:
        remote = (setting(ENV_ENDPOINT) or "").strip()
        if not remote:
            return Locality(True, f"unix://{endpoint.lxd_socket()}")
        local = loopback_url(remote)
        return Locality(local, remote, None if local else f"{ENV_ENDPOINT}={remote}")

    def remote_features(self) -> frozenset[Feature]:
        return frozenset({Feature.NETWORK_DNS})  # resolv.conf goes in through LXD's file API

    @property
    def _socket(self) -> str | None:
        return None if self.remote is not None else endpoint.lxd_socket()

    @property
    def client(self) -> pylxd.Client:
        if self._client is None:
            self._client = _connect(self.remote)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.api.session.close()
            self._client = None

    @classmethod
    def probe(cls) -> EngineStatus:
        from ...models import EngineStatus

        try:
            remote = _Remote.from_env()
        except EngineUnavailable as err:
            return EngineStatus("lxd", shutil.which("lxd") is not None, False, False,
                                endpoint=setting(ENV_ENDPOINT), problem=err.problem, fix=err.fix)
        if remote is None:
            return endpoint.probe_local()
        installed = shutil.which("lxd") is not None
        try:
            client = _connect(remote)
        except CmanError as err:
            problem = err.problem if isinstance(err, EngineUnavailable) else err.message
            return EngineStatus("lxd", installed, False, False, endpoint=remote.endpoint, problem=problem,
                                fix=err.hint or f"check that LXD listens at {remote.endpoint} (core.https_address)")
        with contextlib.suppress(Exception):
            client.api.session.close()
        version = str((client.host_info.get("environment") or {}).get("server_version") or "")
        return EngineStatus("lxd", installed, True, True, version=version, endpoint=remote.endpoint)

    @classmethod
    def validate_name(cls, name: str) -> None:
        check_name(name, NAME_RE, 63, NAME_RULES)

    # -- low-level calls (raise engine exceptions; callers wrap them in _boundary) ----------

    def _wait_op(self, operation: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for a background operation: its final metadata, or OperationFailed.

        With ``timeout``, return after about that many seconds even if it still runs (the
        metadata then says ``Running``: pull polls its progress so). Without, wait until it
        ends, however long: in steps of :data:`WAIT_STEP`, each a request of its own.
        """
        op_id = operation.rstrip("/").split("/")[-1].split("?")[0]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = WAIT_STEP if deadline is None else max(0, min(WAIT_STEP, math.ceil(deadline - time.monotonic())))
            body = self.client.api.operations[op_id].wait.get(
                params={"timeout": str(step)}, timeout=(CLIENT_TIMEOUT, step + WAIT_MARGIN),
            ).json()
            meta = body.get("metadata") or {}
            if body.get("error") and not meta:
                raise OperationFailed(str(body["error"]))
            if meta.get("status") == "Failure" or int(meta.get("status_code") or 200) >= 400:
                raise OperationFailed(str(meta.get("err") or meta.get("status") or "operation failed"), meta)
            if int(meta.get("status_code") or 200) >= 200 or (deadline is not None and time.monotonic() >= deadline):
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

    def kill(self, ref: str) -> None:
        """Stop at once (a job's end, a network that cannot be set up); a gone container is fine."""
        with contextlib.suppress(ContainerNotFound), _boundary(container=ref, action="stop"):
            self._set_state(ref, "stop", force=True)

    def _file(self, ref: str, path: str) -> bytes | None:
        """A file of the container (running or stopped); None when it does not exist.

        A container that is gone is not a missing file: LXD answers 404 for both, with
        "Instance not found" for the container, and that error is raised (an ephemeral
        container vanishes once it stops: its job's code must not read as "none recorded").
        """
        from pylxd import exceptions as lxd_exc

        try:
            response = self.client.api.instances[ref].files.get(params={"path": path}, is_api=False)
        except lxd_exc.NotFound as err:
            if classify_message(_api_text(err)) == "container-not-found":
                raise
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
