"""The PVE HTTP API through proxmoxer (HTTPS backend), and the one place its failures become
cman's errors.

Every request's parameters are checked against the published schema before they leave
(:func:`cman.pve.schema.check_request`). Only GETs are retried (bounded backoff,
:mod:`cman._sys.retry`); a create or start is sent once. An asynchronous call returns a UPID
that :meth:`PveClient.wait` polls (``GET /nodes/{node}/tasks/{upid}/status``) until
``status`` is ``stopped``; success is ``exitstatus == "OK"``. proxmoxer's own
``Tasks.blocking_status`` is not used: it returns None on timeout and does not retry a
failed poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .._sys.retry import idempotent
from ..errors import CmanError, Conflict, EngineError, EngineTimeout, EngineUnavailable, NotFound, UsageError
from . import schema
from .auth import Credentials

T = TypeVar("T")
BACKEND = "pve"
REQUEST_TIMEOUT = 15.0


class TaskFailed(EngineError):
    """A PVE task ended with an exitstatus other than OK (exit 1)."""


@dataclass(frozen=True)
class TaskResult:
    upid: str
    exitstatus: str
    seconds: float


def check_url(url: str) -> tuple[str, int]:
    """``https://HOST:8006`` -> (host, port); exit 2 for anything else (no path, no credentials)."""
    try:
        parts = urlsplit(url)
        port = parts.port or 8006
    except ValueError:
        raise UsageError(f"invalid --pve-url {url!r}: use https://HOST:8006") from None
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"invalid --pve-url {url!r}: use https://HOST:8006 (no path, no credentials)")
    return parts.hostname, port


def _is_transient(err: BaseException) -> bool:
    import requests

    if isinstance(err, requests.exceptions.SSLError):
        return False
    if isinstance(err, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    status = getattr(err, "status_code", None)
    return isinstance(status, int) and status in (502, 503, 504, 595, 596)


class PveClient:
    """One PVE API endpoint, authenticated; the methods are the calls provisioning makes."""

    def __init__(self, url: str, creds: Credentials, *, verify: str | bool = True,
                 timeout: float = REQUEST_TIMEOUT) -> None:
        from .._sys.urlget import is_loopback

        self.url = url
        host, port = check_url(url)
        self.host = host
        loopback = is_loopback(host)
        # An http(s)_proxy meant for the outside must not swallow a loopback PVE (as urlget).
        no_proxy = {"http": None, "https": None} if loopback else None
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        kwargs: dict[str, Any] = {"verify_ssl": verify, "timeout": timeout, "proxies": no_proxy}
        if creds.is_token:
            kwargs.update(user=creds.user, token_name=creds.token_name, token_value=creds.secret)
        else:
            kwargs.update(user=creds.user, password=creds.secret)  # proxmoxer logs in here (a ticket)

        def connect() -> Any:
            from proxmoxer import ProxmoxAPI

            return ProxmoxAPI(address, backend="https", **kwargs)

        self._api = self._call("log in", connect)  # a password login is a request; a token is not
        if loopback:
            self._api._store["session"].trust_env = False  # proxmoxer's session: no environment proxies

    # -- the error boundary ---------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one API call; every failure leaves as a CmanError whose message has no secret."""
        import requests
        from proxmoxer import AuthenticationError, ResourceException

        try:
            return fn()
        except requests.exceptions.SSLError as err:
            raise EngineUnavailable(BACKEND, f"TLS verification of {self.host} failed ({_first_line(err)})",
                                    "pass the cluster's CA with --pve-ca (copy /etc/pve/pve-root-ca.pem "
                                    "from a node)") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            raise EngineUnavailable(BACKEND, f"cannot reach {self.url} ({what})",
                                    "check --pve-url and that pveproxy answers on port 8006") from None
        except AuthenticationError:
            raise EngineUnavailable(BACKEND, f"{self.url} refused the login",
                                    "check the user and password (root@pam for keyctl)") from None
        except ResourceException as err:
            raise _translate(what, err) from None

    def _get(self, what: str, fn: Callable[[], T]) -> T:
        """A GET: transient failures (connection, 502-504) retried with backoff, then translated."""
        return self._call(what, idempotent(_is_transient)(fn))

    @staticmethod
    def _checked(endpoint: str, params: dict[str, str], *, skip: frozenset[str] = frozenset()) -> None:
        errors = schema.check_request(endpoint, params, skip_missing=skip)
        if errors:
            name, why = next(iter(errors.items()))
            raise UsageError(f"invalid {name} {params.get(name, '')!r}: {why}")

    # -- calls ------------------------------------------------------------------------------------

    def nextid(self) -> int:
        self._checked("GET /cluster/nextid", {})
        value = self._get("GET /cluster/nextid", lambda: self._api.cluster.nextid.get())
        try:
            return int(str(value))
        except ValueError:
            raise EngineError(f"pve: /cluster/nextid answered {value!r}, not a number") from None

    def create(self, node: str, params: dict[str, str]) -> str:
        self._checked("POST /nodes/{node}/lxc", {"node": node, **params})
        return self._upid(self._call(f"creating CT {params.get('vmid')}",
                                     lambda: self._api.nodes(node).lxc.post(**params)))

    def start(self, node: str, vmid: int) -> str:
        self._checked("POST /nodes/{node}/lxc/{vmid}/status/start", {"node": node, "vmid": str(vmid)})
        return self._upid(self._call(f"starting CT {vmid}", lambda: self._api.nodes(node).lxc(vmid).status.start.post()))

    def task_status(self, node: str, upid: str) -> dict[str, Any]:
        self._checked("GET /nodes/{node}/tasks/{upid}/status", {"node": node, "upid": upid})
        answer = self._get("task status", lambda: self._api.nodes(node).tasks(upid).status.get())
        if not isinstance(answer, dict) or answer.get("status") not in ("running", "stopped"):
            raise EngineError(f"pve: unexpected task status answer for {upid}")
        return answer

    def wait(self, node: str, upid: str, *, what: str, timeout: float, poll: float = 1.0) -> TaskResult:
        """Poll a task until it stops; TaskFailed unless its exitstatus is OK, EngineTimeout after ``timeout``."""
        started = time.monotonic()
        while True:
            status = self.task_status(node, upid)
            elapsed = time.monotonic() - started
            if status["status"] == "stopped":
                exitstatus = str(status.get("exitstatus", ""))
                if exitstatus != "OK":
                    raise TaskFailed(f"pve: {what} failed on node {node}: {_first_line(exitstatus) or 'no exit status'}",
                                     hint=f"task {upid}")
                return TaskResult(upid, exitstatus, elapsed)
            if elapsed >= timeout:
                raise EngineTimeout(f"pve: {what} did not finish within {timeout:g} s", hint=f"task {upid} is still "
                                    "running; see it in the PVE task log")
            time.sleep(min(poll, max(0.0, timeout - elapsed)))

    @staticmethod
    def _upid(value: object) -> str:
        if not isinstance(value, str) or not value.startswith("UPID:"):
            raise EngineError(f"pve: expected a task ID (UPID), got {str(value)[:80]!r}")
        return value


def _first_line(err: object) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


def _translate(what: str, err: Any) -> CmanError:
    """A PVE HTTP error as cman's: 400 bad input, 401/403 no permission, 404, 'already exists'."""
    status = int(getattr(err, "status_code", 0) or 0)
    reason = _first_line(getattr(err, "content", "") or "")
    errors = getattr(err, "errors", None)
    detail = "; ".join(f"{k}: {v}" for k, v in errors.items()) if isinstance(errors, dict) else ""
    text = f"{reason} ({detail})" if detail else reason
    if status == 400:
        return UsageError(f"pve refused {what}: {text}")
    if status in (401, 403):
        return EngineUnavailable(BACKEND, f"{what}: {text}", "check the token's or user's permissions on PVE")
    if status == 404:
        return NotFound(f"pve: {what}: {text}")
    if "already exists" in text:
        return Conflict(f"pve: {what}: {text}", hint="choose another --vmid, or leave it out to get a free one")
    return EngineError(f"pve: {what}: HTTP {status} {text}")
